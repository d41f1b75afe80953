"""Seeds the ordo that scripts/sweep runs, through its own API, so that the sweep
reaches real aggregates and not only 404s: users (one deactivated), products (one
out of stock, one discontinued) and orders in every state of their lifecycle.

Usage: ORDO_TOKEN=<admin token> sweep_seed.py BASE_URL OUT_TOML

Writes OUT_TOML: schemathesis dictionaries of the ids, stream ids and position
tokens it made (scripts/lib/schemathesis.toml binds them to parameters, so that
generated requests use them part of the time).
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

base, out = sys.argv[1], sys.argv[2]
token = os.environ.get("ORDO_TOKEN")
positions = []


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            status, payload = answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        status, payload = error.code, json.load(error)
    if isinstance(payload, dict) and "position" in payload:
        positions.append(payload["position"])
    return status, payload


def command(method, path, body=None, expect=(200, 201, 202)):
    status, payload = call(method, path, body)
    if status not in expect:
        sys.exit(f"seeding: {method} {path} answered {status}: {payload}")
    return payload


def settled(answer):
    """The order once the saga has moved it past `pending`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, order = call("GET", f"/orders/{answer['id']}?min_position={answer['position']}")
        if order.get("status") not in (None, "pending"):
            return order
        time.sleep(0.1)
    sys.exit(f"seeding: order {answer['id']} stayed pending")


users = [
    command("POST", "/users", {"email": f"sweep{i}@example.com", "name": f"Sweep {i}"})["id"]
    for i in range(3)
]
inactive = command("POST", "/users", {"email": "gone@example.com", "name": "Gone"})["id"]
command("POST", f"/users/{inactive}/deactivate")

products = [
    command(
        "POST", "/products", {"sku": f"SWEEP-{i}", "name": f"Sweep {i}", "price": "2.50", "stock": 100000}
    )["id"]
    for i in range(3)
]
empty = command("POST", "/products", {"sku": "SWEEP-EMPTY", "name": "Empty", "price": "1", "stock": 0})["id"]
gone = command("POST", "/products", {"sku": "SWEEP-GONE", "name": "Gone", "price": "3.10", "stock": 5})["id"]
command("POST", f"/products/{gone}/discontinue")

orders = []
# confirmed, paid, shipped, delivered, cancelled: two of each.
for i, fate in enumerate(["confirmed", "paid", "shipped", "delivered", "cancelled"] * 2):
    placed = command(
        "POST",
        "/orders",
        {"user_id": users[i % 3], "lines": [{"product_id": products[i % 3], "quantity": 1 + i}]},
    )
    order = settled(placed)
    if order["status"] != "confirmed":
        sys.exit(f"seeding: order {placed['id']} was {order['status']}")
    if fate in ("paid", "shipped", "delivered"):
        command("POST", f"/orders/{placed['id']}/pay", {"amount": order["total"]})
    if fate in ("shipped", "delivered"):
        command("POST", f"/orders/{placed['id']}/ship")
    if fate == "delivered":
        command("POST", f"/orders/{placed['id']}/deliver")
    if fate == "cancelled":
        command("POST", f"/orders/{placed['id']}/cancel", {"reason": "seeded"})
    orders.append(placed["id"])
rejected = command("POST", "/orders", {"user_id": users[0], "lines": [{"product_id": empty, "quantity": 1}]})
settled(rejected)
orders.append(rejected["id"])

all_users = [*users, inactive]
all_products = [*products, empty, gone]
streams = (
    [f"user-{u}" for u in all_users]
    + [f"product-{p}" for p in all_products]
    + [f"order-{o}" for o in orders]
)
dictionaries = {
    "users": all_users,
    "products": all_products,
    "orders": orders,
    "ids": all_users + all_products + orders,
    "streams": streams,
    "positions": sorted(set(positions)),
}
with open(out, "w", encoding="utf-8") as f:
    f.write("# Written by scripts/lib/sweep_seed.py: what it seeded.\n")
    for name, values in dictionaries.items():
        f.write(f"\n[dictionaries.{name}]\nvalues = {json.dumps(values)}\n")
print(
    f"seeded {len(all_users)} users, {len(all_products)} products, {len(orders)} orders "
    f"({len(positions)} writes)",
    file=sys.stderr,
)
