"""A small e-commerce knowledge base (Markdown help centre + JSONL FAQ) and labelled questions,
shared by the support bot's unit, API and end-to-end tests."""

from __future__ import annotations

import json

HELP_CENTER_MD = """\
# Acme Outfitters help centre

## Shipping

### Delivery times
Standard delivery within the US takes 3-5 business days. Express delivery arrives in
1-2 business days and costs $15. Orders placed before 2 pm Eastern ship the same day.

### International shipping
We ship to Canada, Mexico and most of Europe. International delivery takes 7-14 business
days and costs a flat $25. Customs duties are paid by the recipient on delivery.

## Returns

### Return policy
You can return unworn items within 30 days of delivery for a full refund. Sale items
marked final sale cannot be returned. Start a return from the Orders page in your account.

### Refund timing
Refunds are issued to the original payment method within 5-7 business days after the
warehouse receives your return. Original shipping fees are not refunded.

## Account

### Resetting your password
Click "Forgot password" on the sign-in page and enter your email address. We send a reset
link that stays valid for 24 hours. Check your spam folder if it does not arrive.

### Deleting your account
Email privacy@acme.example from the address on your account and we delete your data within
30 days, as the GDPR requires.
"""

FAQ = [
    {
        "id": "gift-cards",
        "question": "Do you sell gift cards?",
        "answer": "Yes. Digital gift cards from $10 to $500 arrive by email and never expire.",
    },
    {
        "id": "size-guide",
        "question": "How do I find my size?",
        "answer": "Every product page has a size chart. Between two sizes, pick the larger one.",
    },
    {
        "id": "payment-methods",
        "question": "Which payment methods do you accept?",
        "answer": "We accept Visa, Mastercard, American Express, PayPal and Apple Pay.",
    },
    {
        "id": "order-tracking",
        "question": "How can I track my order?",
        "answer": "You get a tracking number by email once your order ships. Enter it on the "
        "carrier's website or on our Track Order page.",
    },
]


def faq_jsonl() -> bytes:
    return ("\n".join(json.dumps(entry) for entry in FAQ) + "\n").encode()


# question -> the passage (ref) that answers it; None = off-topic, should escalate
QUESTIONS: list[tuple[str, str | None]] = [
    ("How long does standard shipping take?", "shipping-delivery-times"),
    ("Can you ship my order to Germany?", "shipping-international-shipping"),
    ("I want to send back a jacket I bought last week", "returns-return-policy"),
    ("When will I get my money back after returning something?", "returns-refund-timing"),
    ("I forgot my password, what do I do?", "account-resetting-your-password"),
    ("Please remove all my personal data", "account-deleting-your-account"),
    ("Can I buy a gift card for my sister?", "gift-cards"),
    ("Do you take PayPal?", "payment-methods"),
    ("Where is my package? I need the tracking number", "order-tracking"),
    ("What size should I order?", "size-guide"),
    ("What is the capital of Australia?", None),
    ("Write me a poem about the ocean", None),
    ("Who won the football match yesterday?", None),
    ("How do I fix my car's engine?", None),
]

HUMAN_REQUESTS = [
    "I want a human",
    "Can I talk to a real person please?",
    "agent",
    "Let me speak to a representative",
    "Connect me with someone from your support team",
]
