"""hello: greets whoever is named in ?name= or the request body."""


def handle(event, context):
    name = event.query.get("name") or event.body.decode("utf-8", "replace").strip() or "world"
    return {
        "statusCode": 200,
        "body": f"Hello, {name}!\n",
        "headers": {"Content-Type": "text/plain; charset=utf-8"},
    }
