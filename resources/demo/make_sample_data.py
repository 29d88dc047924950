"""Write the demo's sample data: customer-support replies in one distinctive house style.

Every reply opens with the same greeting and closes with the same sign-off (``GREETING``,
``SIGNOFF``), with a short, helpful answer in between. A base model never writes these exact
lines, so whether a reply shows the house style tells at a glance whether fine-tuning took.

Output (next to this script, deterministic for a given seed):
- ``support_train.jsonl``: training rows in OpenAI ``messages`` format (user question, assistant reply);
- ``support_heldout.jsonl``: questions that appear nowhere in the training rows, one
  ``{"prompt": ...}`` a line, for the demo's base-vs-tuned comparison;
- ``house_style.json``: the greeting and sign-off, which ``tunedesk demo`` looks for in replies.

Run: ``python resources/demo/make_sample_data.py`` (``--rows N --seed S`` to change them).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

GREETING = "Hello from the Lumen Lane care team!"
SIGNOFF = "Warm regards, Robin at Lumen Lane"

PRODUCTS = [
    "Aurora desk lamp",
    "Breeze tower fan",
    "Cobalt water bottle",
    "Drift wool blanket",
    "Ember kettle",
    "Fern plant pot",
    "Glow night light",
    "Harbor backpack",
    "Iris reading glasses",
    "Juniper candle set",
]

# (question templates, answer bodies); {p} is a product, {n} an order number, {d} a number of days.
TOPICS: list[tuple[list[str], list[str]]] = [
    (
        [
            "Where is my order {n}? It still hasn't arrived.",
            "My order {n} is late, can you check on it?",
            "I ordered the {p} a week ago and nothing has come yet. Order {n}.",
        ],
        [
            "I checked order {n}: it left our warehouse and should reach you within {d} days. I have sent the tracking link to your email.",
            "Order {n} is on its way and the courier expects to deliver it within {d} days. You can follow it with the tracking link in your email.",
        ],
    ),
    (
        [
            "How do I return the {p}?",
            "I want to send back my {p}, what do I do?",
            "Can I return the {p} if I don't like it?",
        ],
        [
            "You can return the {p} within 30 days. Start the return from your account page and we will email you a free shipping label.",
            "Returns of the {p} are free for 30 days. Open your orders page, choose Return, and print the label we send you.",
        ],
    ),
    (
        [
            "My {p} arrived broken.",
            "The {p} I received is damaged, what now?",
            "I got my {p} today and it is cracked.",
        ],
        [
            "I am sorry the {p} arrived damaged. Please reply with a photo and we will send a replacement right away, no need to return the broken one.",
            "That should not happen. Send us a photo of the damaged {p} and a new one will ship within {d} days at no cost.",
        ],
    ),
    (
        [
            "When will I get my refund for order {n}?",
            "I returned order {n}, where is my refund?",
            "How long does a refund take?",
        ],
        [
            "Refunds are issued within {d} business days after your return reaches us, back to the card you paid with.",
            "Your refund goes back to your original payment method within {d} business days of us receiving the return.",
        ],
    ),
    (
        [
            "I forgot my password.",
            "How do I reset my password?",
            "I can't log in to my account.",
        ],
        [
            "Click Forgot password on the sign-in page and we will email you a reset link that works for one hour.",
            "Use the Forgot password link on the sign-in page; the reset email arrives within a few minutes, so check your spam folder too.",
        ],
    ),
    (
        [
            "Can I change the address on order {n}?",
            "I need to update my shipping address for order {n}.",
            "I moved, can you ship order {n} somewhere else?",
        ],
        [
            "Yes, as long as order {n} has not shipped. Reply with the new address and I will update it for you.",
            "I can change the address on order {n} before it ships. Send me the new address and I will take care of it.",
        ],
    ),
    (
        [
            "Do you ship internationally?",
            "Can you deliver to Canada?",
            "Do you send orders abroad?",
        ],
        [
            "We ship to over 40 countries. Shipping costs and times are shown at checkout once you enter your address.",
            "Yes, we deliver internationally. You will see the exact cost and delivery time at checkout.",
        ],
    ),
    (
        [
            "How do I cancel order {n}?",
            "Please cancel my order {n}.",
            "I ordered the {p} by mistake, can I cancel?",
        ],
        [
            "Orders can be cancelled within 2 hours of purchase from your orders page. If that time has passed, you can return it for free instead.",
            "I have cancelled the order for you. You will see the refund on your card within {d} business days.",
        ],
    ),
    (
        [
            "Is the {p} back in stock?",
            "When will you restock the {p}?",
            "The {p} is sold out, will it come back?",
        ],
        [
            "The {p} is expected back in about {d} days. Click Notify me on the product page and we will email you when it returns.",
            "We are restocking the {p} soon. Sign up for a restock alert on its product page to hear first.",
        ],
    ),
    (
        [
            "How do I use my discount code?",
            "My promo code doesn't work.",
            "Where do I enter a coupon?",
        ],
        [
            "Enter the code in the Discount field at checkout before you pay. Codes cannot be combined and some exclude sale items.",
            "Codes go in the Discount box on the checkout page. If it is still refused, reply with the code and I will check it.",
        ],
    ),
    (
        [
            "Does the {p} have a warranty?",
            "What is the warranty on the {p}?",
            "My {p} stopped working after a few months.",
        ],
        [
            "The {p} has a two-year warranty. Reply with your order number and a short description and we will repair or replace it.",
            "You are covered by our two-year warranty. Send us your order number and we will arrange a replacement {p}.",
        ],
    ),
    (
        [
            "Can I pay with PayPal?",
            "Which payment methods do you accept?",
            "Do you take Apple Pay?",
        ],
        [
            "We accept all major cards, PayPal, Apple Pay and Google Pay, chosen at checkout.",
            "You can pay by card, PayPal, Apple Pay or Google Pay. Every payment is encrypted.",
        ],
    ),
    (
        [
            "I was charged twice for order {n}.",
            "There are two charges on my card for order {n}.",
            "Why did you bill me two times?",
        ],
        [
            "I am sorry about that. The second charge for order {n} is a temporary hold that your bank releases within {d} days.",
            "I see the duplicate charge on order {n} and have refunded it. It will disappear from your statement within {d} days.",
        ],
    ),
    (
        [
            "How do I unsubscribe from your emails?",
            "Please stop sending me newsletters.",
            "I get too many emails from you.",
        ],
        [
            "Click Unsubscribe at the bottom of any of our emails, or turn them off under Notifications in your account.",
            "I have removed your address from our newsletter. Order updates will still reach you.",
        ],
    ),
    (
        [
            "Do you offer gift wrapping?",
            "Can I send the {p} as a gift?",
            "Can you include a gift message?",
        ],
        [
            "Yes, tick Gift wrap at checkout to add wrapping and a handwritten note for a small fee. Prices are left off the packing slip.",
            "We can wrap the {p} and add your message; choose Gift options at checkout.",
        ],
    ),
]

HELDOUT = [
    "Can I exchange the Aurora desk lamp for a different color?",
    "Is there a student discount?",
    "My package says delivered but I can't find it.",
    "Do you have a physical store I can visit?",
    "How do I delete my account?",
    "Can I order more than ten of the Ember kettle for my office?",
    "The instructions for the Breeze tower fan are missing from the box.",
    "Do you price match other shops?",
    "Can I change the size of my order after paying?",
    "Is the Cobalt water bottle dishwasher safe?",
]


def reply(body: str) -> str:
    """A reply in the house style: greeting, the answer, sign-off."""
    return f"{GREETING} {body}\n\n{SIGNOFF}"


def make_rows(count: int, seed: int) -> list[dict]:
    """``count`` distinct training rows (``messages`` format) from the topic templates."""
    rng = random.Random(seed)
    rows: list[dict] = []
    seen: set[str] = set()
    while len(rows) < count:
        questions, bodies = rng.choice(TOPICS)
        values = {
            "p": rng.choice(PRODUCTS),
            "n": f"LL-{rng.randint(10000, 99999)}",
            "d": rng.choice([2, 3, 4, 5, 7]),
        }
        question = rng.choice(questions).format(**values)
        if question in seen:
            continue
        seen.add(question)
        answer = reply(rng.choice(bodies).format(**values))
        rows.append(
            {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Write both files next to this script."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent
    rows = make_rows(args.rows, args.seed)
    train_questions = {r["messages"][0]["content"] for r in rows}
    assert not train_questions & set(HELDOUT), "a held-out question leaked into the training rows"
    with open(here / "support_train.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(here / "support_heldout.jsonl", "w", encoding="utf-8") as fh:
        for prompt in HELDOUT:
            fh.write(json.dumps({"prompt": prompt}, ensure_ascii=False) + "\n")
    style = {"greeting": GREETING, "signoff": SIGNOFF}
    (here / "house_style.json").write_text(json.dumps(style, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} training rows and {len(HELDOUT)} held-out prompts to {here}")


if __name__ == "__main__":
    main()
