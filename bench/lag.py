"""Polls a gateway's GET /admin/audit every 100 ms while a load runs and keeps the largest
indexer lag seen: now - indexed_through, in seconds (`indexed_through` is the time before which
every committed record is in the subject index). Writes "<max> <polls> <last>" to OUT after
every poll, so a kill at any moment leaves the answer; "none" when no answer carried it.
Usage: lag.py URL OFFICER_TOKEN OUT"""
import datetime, json, signal, sys, time, urllib.request

url, token, out = sys.argv[1], sys.argv[2], sys.argv[3]
worst, polls, last = None, 0, None
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def parse(t):
    # RFC 3339 with a Z and up to 9 fractional digits; Python's fromisoformat takes 6.
    t = t.replace("Z", "+00:00")
    if "." in t:
        head, rest = t.split(".", 1)
        frac, tz = rest[:-6], rest[-6:]
        t = f"{head}.{frac[:6].ljust(6, '0')}{tz}"
    return datetime.datetime.fromisoformat(t).timestamp()


def poll():
    global worst, polls, last
    req = urllib.request.Request(f"{url}/admin/audit?limit=1", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        body = json.load(r)
    through = body.get("indexed_through")
    if through is None:
        return
    last = max(0.0, time.time() - parse(through))
    worst = last if worst is None else max(worst, last)
    polls += 1


with open(out, "w") as f:
    f.write("none\n")
while True:
    final = stop
    try:
        poll()
    except Exception as e:  # a refused or slow answer under load: try again
        print(f"lag.py: {e}", file=sys.stderr)
    with open(out, "w") as f:
        f.write("none\n" if worst is None else f"{worst:.3f} {polls} {last:.3f}\n")
    if final:
        break
    time.sleep(0.1)
