"""Reads Parquet files with pyarrow and with DuckDB, independently of ferry, and prints what each
reader sees as JSON: per file, each reader's column names and types and its rows, every value as
ferry's canonical text (ints and decimals as digits, floats as Python's shortest repr, bools as
1/0, dates YYYY-MM-DD, datetimes YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff]Z) or null.

usage: python3 parquet_read.py FILE...
"""

import datetime
import json
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

EPOCH = datetime.datetime(1970, 1, 1)


def timestamp(v, per_second):
    secs, frac = divmod(v, per_second)
    nanos = frac * (10**9 // per_second)
    t = EPOCH + datetime.timedelta(seconds=secs)
    s = (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T"
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    )
    if nanos == 0:
        pass
    elif nanos % 1_000_000 == 0:
        s += f".{nanos // 1_000_000:03d}"
    elif nanos % 1000 == 0:
        s += f".{nanos // 1000:06d}"
    else:
        s += f".{nanos:09d}"
    return s + "Z"


def text(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, datetime.date):
        return v.isoformat()
    if hasattr(v, "as_tuple"):  # Decimal
        return format(v, "f")
    return str(v)


def with_pyarrow(path):
    table = pq.read_table(path)
    cols = []
    for field, col in zip(table.schema, table.columns):
        if pa.types.is_timestamp(field.type):
            per = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[field.type.unit]
            vals = [
                None if v is None else timestamp(v, per)
                for v in col.cast(pa.int64()).to_pylist()
            ]
        else:
            vals = [text(v) for v in col.to_pylist()]
        cols.append(vals)
    return {
        "names": table.schema.names,
        "types": [str(f.type) for f in table.schema],
        "rows": [list(r) for r in zip(*cols)] if cols else [],
    }


def with_duckdb(path):
    con = duckdb.connect()
    src = "read_parquet(?)"
    desc = con.execute(f"DESCRIBE SELECT * FROM {src}", [path]).fetchall()
    names = [d[0] for d in desc]
    types = [d[1] for d in desc]
    exprs = []
    for n, t in zip(names, types):
        q = '"' + n.replace('"', '""') + '"'
        if t.startswith("TIMESTAMP"):
            exprs.append(f"epoch_ns({q})" if "_NS" in t else f"epoch_us({q})")
        elif t == "DATE" or t.startswith("DECIMAL"):
            exprs.append(f"CAST({q} AS VARCHAR)")
        else:
            exprs.append(q)
    rows = con.execute(f"SELECT {', '.join(exprs)} FROM {src}", [path]).fetchall()
    out = []
    for r in rows:
        row = []
        for v, t in zip(r, types):
            if v is not None and t.startswith("TIMESTAMP"):
                row.append(timestamp(v, 10**9 if "_NS" in t else 10**6))
            else:
                row.append(text(v))
        out.append(row)
    return {"names": names, "types": types, "rows": out}


print(
    json.dumps(
        {p: {"pyarrow": with_pyarrow(p), "duckdb": with_duckdb(p)} for p in sys.argv[1:]}
    )
)
