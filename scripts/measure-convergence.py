#!/usr/bin/env python3
"""Measures one route change, file written -> Envoy serving it, through `flotilla standalone`.

usage: scripts/measure-convergence.py FLOTILLA_BINARY ENVOY_BINARY
Starts a demo backend (127.0.0.1:18080), `flotilla standalone` on a temp copy of
examples/standalone, and a real Envoy (gateway local/default/demo, listener 127.0.0.1:10080);
then rewrites the route 31 times (atomic rename) and times until Envoy routes the new path.
An informal end-to-end number until the load harness (loadtest/) exists.
"""
import os, subprocess, time, urllib.request, json, statistics, sys, tempfile
bin_ = sys.argv[1]; envoy = sys.argv[2]
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
    print(f"route change file->Envoy serving, n={len(lat)}: p50={statistics.median(lat):.1f} ms p90={lat[int(len(lat)*0.9)-1]:.1f} ms max={lat[-1]:.1f} ms")
finally:
    for p in (ev, st, be): p.kill()
