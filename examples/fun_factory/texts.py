"""Everything the Fun Factory says: fortunes, jokes and the magic eight ball's answers.

Written for this example; use them as you like.
"""

FORTUNES = [
    "A message you send today arrives exactly once. Cherish it.",
    "Your next retry will succeed.",
    "A queue that is empty at night is a queue that slept well.",
    "Someone will acknowledge you before the timeout.",
    "The uid you seek is already in the log.",
    "Patience: exponential back-off is still progress.",
    "You will find a bug in code you wrote last week. Be kind to that person.",
    "Good news travels over TCP; gossip prefers UDP.",
    "An old friend will reconnect after a restart.",
    "Today is a good day to read the error queue.",
    "Your latency will be low and your throughput high.",
    "What was committed cannot be lost.",
    "A small service does one thing and sleeps well.",
    "The answer is in the statistics, under p99.",
    "Restarting is not failing; losing messages is.",
    "You will be handed a pull request with no tests. Ask for them.",
    "Fortune favours the well-monitored.",
    "Someone you trust will send you a malformed line. Forgive them; reply 100.",
    "Beware of handlers that never return.",
    "The best time to write a changelog was yesterday. The second best is now.",
]

JOKES = [
    ("Why did the message go to therapy?", "It had too many unresolved dependencies."),
    ("Why was the queue so calm?", "It knew everything would be processed eventually."),
    ("What did the server say to the slow client?", "Take your time. Ten seconds, to be exact."),
    ("Why don't UDP jokes get laughs?", "Nobody confirms they got them."),
    ("How does a sequenced sender tell a story?", "One part at a time, and never out of order."),
    ("Why did the developer break up with SQLite?", "Too many commitments."),
    ("What's a retry's favourite song?", "Hit me baby one more time."),
    ("Why did the uid feel special?", "It was one in 340 undecillion."),
    ("Why was the router so popular?", "It always knew where to send people."),
    ("What did the tracker say to the duplicate?", "I've seen you before."),
    ("Why did the process refuse to die?", "It was still draining its queue."),
    ("Why do services never get lonely?", "They always have a socket to talk to."),
    ("What do you call a heartbeat nobody answers?", "An ENQ-uiry without an ACK-nowledgement."),
    ("Why did the log file go on a diet?", "It kept getting rotated and compressed anyway."),
    ("Why was the JSON so honest?", "It had nothing to hide but whitespace."),
]

EIGHT_BALL_ANSWERS = [
    # Yes
    "It is certain.",
    "Without a doubt.",
    "You may rely on it.",
    "The logs say yes.",
    "Acknowledged: yes.",
    "Signs point to yes.",
    "All tests pass on that one.",
    # Maybe
    "Reply hazy, retry later.",
    "Ask again after the back-off.",
    "Cannot predict now; the queue is still draining.",
    "Concentrate and ask again.",
    "That depends on your timeout.",
    # No
    "Don't count on it.",
    "My reply is no.",
    "The error queue says no.",
    "Outlook not so good.",
    "Very doubtful.",
]
