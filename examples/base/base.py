"""The smallest ecosys application: one endpoint, no input, a typed answer.

Run it:  python examples/base/base.py -i 0 --tcp 127.0.0.1:8890
Poke it: echo '{"route_key": "hello"}' | nc -q1 127.0.0.1 8890
"""

from pydantic import BaseModel

from ecosys import Application, endpoint


class Greeting(BaseModel):
    """The answer."""

    text: str


@endpoint("hello")
async def hello() -> Greeting:
    """Say hello."""
    return Greeting(text="hello from ecosys")


if __name__ == "__main__":
    Application().run()
