"""heavy: summary statistics of a CSV (or a JSON list of records) with pandas.

The numeric-heavy dependency set (numpy + pandas, ~40 MB compressed) is the point:
it makes a function image whose own layer outweighs the shared base.
"""

import io
import json

import numpy as np
import pandas as pd

SAMPLE = "x,y\n1,2.5\n2,3.5\n3,7.0\n4,8.5\n"


def handle(event, context):
    body = event.body or SAMPLE.encode()
    try:
        if event.headers.get("Content-Type", "").startswith("application/json"):
            frame = pd.DataFrame(json.loads(body))
        else:
            frame = pd.read_csv(io.BytesIO(body))
    except ValueError as exc:
        return {"statusCode": 400, "body": {"error": str(exc)}}
    numeric = frame.select_dtypes(include=[np.number])
    stats = json.loads(numeric.describe().to_json())
    return {
        "statusCode": 200,
        "body": {
            "rows": len(frame),
            "columns": list(map(str, frame.columns)),
            "describe": stats,
            "versions": {"numpy": np.__version__, "pandas": pd.__version__},
        },
    }
