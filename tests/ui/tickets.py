"""A handful of realistic tickets for the UI tests, the screenshots and the UI benchmark (posted through the API)."""

from __future__ import annotations

TICKETS: list[dict[str, str]] = [
    {"subject": "Charged twice", "body": "My card was charged twice for order 1234, please refund one of the payments.", "channel": "email"},
    {"subject": "Cannot log in", "body": "I forgot my password and the reset email never arrives. I checked spam too.", "channel": "chat"},
    {"subject": "Where is my parcel?", "body": "Tracking for my order has not updated in five days. When will it arrive?", "channel": "email"},
    {"subject": "VPN down for the whole office", "body": "Since this morning nobody in the Berlin office can connect to the VPN. Error 809.", "channel": "phone"},
    {"subject": "Return the shoes", "body": "The shoes are too small, how do I send them back and get my money?", "channel": "portal"},
    {"subject": "Cancel my subscription", "body": "Please cancel my plan at the end of the month, I am moving abroad.", "channel": "email"},
    {"subject": "Laptop screen flickers", "body": "My work laptop screen flickers and goes black when I move the lid.", "channel": "portal"},
    {"subject": "Suspicious login alert", "body": "I got an alert about a login from another country. I think my account was hacked.", "channel": "email"},
    {"subject": "App crashes on export", "body": "Since the last update the export button crashes the app every time.", "channel": "chat"},
    {"subject": "Great service", "body": "Just wanted to say your support team was very helpful last week, thanks!", "channel": "social"},
    {"subject": "Invoice copy", "body": "Can you send me a copy of the invoice for order 4471? I need it for my taxes.", "channel": "email"},
    {"subject": "Team plan onboarding", "body": "We just signed up for the team plan; how do we invite our 20 users?", "channel": "email"},
]
