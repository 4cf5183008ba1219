#!/usr/bin/env python3
"""Measures one route change, file written -> Envoy serving it, through `flotilla standalone`.

usage: scripts/measure-convergence.py FLOTILLA_BINARY ENVOY_BINARY [--extra-routes N] [--readers N]
Starts a demo backend (127.0.0.1:18080), `flotilla standalone` on a temp copy of
examples/standalone, and a real Envoy (gateway local/default/demo, listener 127.0.0.1:10080);
then rewrites the route 31 times (atomic rename) and times until Envoy routes the new path.
--extra-routes N adds N more HTTPRoutes (on the same gateway) so the state is large;
--readers N keeps N clients listing every HTTPRoute through the API (page by page) meanwhile:
reads must not slow the config push. The fleet harness (loadtest/) measures at scale.
"""
import os, subprocess, time, urllib.request, json, statistics, sys, tempfile, threading
bin_ = sys.argv[1]; envoy = sys.argv[2]
def opt(name, default):
    return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default
extra_routes = opt("--extra-routes", 0); readers = opt("--readers", 0)
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
d = tempfile.mkdtemp(); y = os.path.join(d, "yaml"); os.makedirs(y)
import shutil
for i in range(31):
    os.makedirs(os.path.join(d, f"p{i}")); open(os.path.join(d, f"p{i}", "index.html"), "w").write("ok")
for f in ["gateway.yaml", "backend.yaml"]:
    shutil.copy(os.path.join(root, "examples/standalone", f), y)
be = subprocess.Popen(["python3", "-m", "http.server", "18080", "--bind", "127.0.0.1", "--directory", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
st = subprocess.Popen([bin_, "standalone", "--dir", y, "--data-dir", os.path.join(d, "data")], stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "st.log"), "w"))
time.sleep(1)
bs = subprocess.run([bin_, "bootstrap", "--gateway", "local/default/demo", "--admin-port", "19911"], capture_output=True).stdout
open(os.path.join(d, "e.json"), "wb").write(bs)
ev = subprocess.Popen([envoy, "-c", os.path.join(d, "e.json"), "--use-dynamic-base-id", "-l", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
route = open(os.path.join(root, "examples/standalone", "route.yaml")).read()
if extra_routes:
    docs = [route.replace("name: hello", f"name: filler-{i}").replace("/hello", f"/filler/{i}") for i in range(extra_routes)]
    open(os.path.join(y, "filler.yaml"), "w").write("\n---\n".join(docs))
def api(path):
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:8081{path}", timeout=30))
deadline = time.time() + 120
while True:
    try:
        if api("/api/v1/revision")["ready"] and len(api("/api/v1/resources?kind=HTTPRoute&limit=5000")["items"]) >= min(extra_routes, 5000): break
    except Exception:
        pass
    if time.time() > deadline: raise SystemExit("standalone did not load the routes")
    time.sleep(0.2)
stop = False; lists = [0]
import re
def reader():
    # Pages are read as bytes, not parsed: on 2 cores, a client parsing 10k objects per list
    # would measure its own CPU use, not the store's.
    while not stop:
        token = None
        while not stop:
            q = "/api/v1/resources?kind=HTTPRoute&limit=5000" + (f"&continue={token}" if token else "")
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:8081{q}", timeout=60).read()
            except Exception:
                break
            m = re.search(rb'"continue":"([0-9a-f]+)"', body[-4096:])
            token = m.group(1).decode() if m else None
            if not token: break
        lists[0] += 1
threads = [threading.Thread(target=reader, daemon=True) for _ in range(readers)]
for t in threads: t.start()
def served(path):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:10080{path}", timeout=1); return True
    except Exception:
        return False
lat = []
try:
    for i in range(31):
        p = f"/p{i}"
        tmp = os.path.join(y, ".route.tmp")
        open(tmp, "w").write(route.replace("/hello", p))
        t0 = time.perf_counter(); os.rename(tmp, os.path.join(y, "route.yaml"))
        while not served(p + "/"):
            if time.perf_counter() - t0 > 10: raise SystemExit(f"no convergence for {p}")
            time.sleep(0.001)
        if i > 0: lat.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.2)
    lat.sort()
    print(f"route change file->Envoy serving (extra routes {extra_routes}, readers {readers}, full lists read {lists[0]}), n={len(lat)}: p50={statistics.median(lat):.1f} ms p90={lat[int(len(lat)*0.9)-1]:.1f} ms max={lat[-1]:.1f} ms")
finally:
    stop = True
    for p in (ev, st, be): p.kill()
