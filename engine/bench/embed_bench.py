"""Time `/api/embed` of wardbox-engine beside llama-server's `/v1/embeddings` on the same inputs,
interleaved (the order alternates every round), and print the medians and their ratio.

Called by embed-vs-llama-server.sh, which starts both servers; standard library only.
"""

import argparse
import json
import math
import statistics
import sys
import time
import urllib.request

SENTENCES = [
    "Patient presents with intermittent chest pain radiating to the left arm for three days.",
    "Blood pressure was 148 over 92 at rest, heart rate 88 and regular, afebrile.",
    "Metformin 500 mg twice daily was continued and lisinopril was increased to 20 mg.",
    "She reports mild nausea after meals and a reduced appetite since the last visit.",
    "Knee examination shows effusion on the right with tenderness along the medial joint line.",
    "HbA1c improved from 8.4 to 7.1 percent over six months of dietary changes.",
    "No known drug allergies; penicillin was tolerated during an earlier admission.",
    "Chest radiograph shows no consolidation, effusion or pneumothorax.",
    "The wound is healing well with no signs of infection; sutures removed today.",
    "Advised to return if symptoms worsen, fever develops or breathing becomes difficult.",
    "Family history of type 2 diabetes in the mother and coronary disease in the father.",
    "Creatinine 1.3 mg/dL, eGFR 54, potassium 4.9 mmol/L on the morning panel.",
    "Physiotherapy twice weekly for six weeks, focusing on quadriceps strengthening.",
    "Sleep is disturbed by nocturia two to three times a night; caffeine reduced.",
    "Follow-up appointment in four weeks with repeat lipid profile and liver enzymes.",
    "Ultrasound of the abdomen demonstrates a normal gallbladder without stones.",
]


def chunk(i, words):
    """A chunk of about `words` words, different for every i (like an ingested note chunk)."""
    out, k = [], i
    while sum(len(s.split()) for s in out) < words:
        out.append(SENTENCES[k % len(SENTENCES)])
        k = k * 7 + 3
    return f"Visit note {i}. " + " ".join(out)


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def wardbox(base, model, texts):
    return post(f"{base}/api/embed", {"model": model, "input": texts})["embeddings"]


def llama_server(base, texts):
    data = post(f"{base}/v1/embeddings", {"model": "m", "input": texts, "encoding_format": "float"})["data"]
    return [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wardbox", required=True, help="base URL of wardbox-engine")
    ap.add_argument("--llama-server", required=True, action="append", metavar="NAME=URL", help="a llama-server configuration (repeatable)")
    ap.add_argument("--baseline", help="base URL of an earlier wardbox-engine build (optional)")
    ap.add_argument("--model", default="all-minilm:l6-v2")
    ap.add_argument("--inputs", type=int, default=32)
    ap.add_argument("--words", type=int, default=140)
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()

    texts = [chunk(i, a.words) for i in range(a.inputs)]
    runners = [("wardbox", lambda t: wardbox(a.wardbox, a.model, t))]
    anchors = []
    for spec in a.llama_server:
        name, url = spec.split("=", 1)
        anchors.append(name)
        runners.append((name, lambda t, url=url: llama_server(url, t)))
    if a.baseline:
        runners.append(("wardbox before", lambda t: wardbox(a.baseline, a.model, t)))

    # Warm-up, and the same vectors from both: the ratio compares equal work.
    first = {name: run(texts) for name, run in runners}
    for name, _ in runners[1:]:
        worst = min(cosine(x, y) for x, y in zip(first["wardbox"], first[name]))
        print(f"{a.inputs} inputs of ~{a.words} words; cosine(wardbox, {name}) worst of {a.inputs}: {worst:.6f}")
        if worst < 0.999:
            print(f"embed-bench: wardbox and {name} disagree on the vectors; the timings do not compare", file=sys.stderr)
            return 1

    times = {name: [] for name, _ in runners}
    for r in range(a.rounds):
        order = runners if r % 2 == 0 else runners[::-1]
        for name, run in order:
            t0 = time.perf_counter()
            run(texts)
            times[name].append(time.perf_counter() - t0)

    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"| server | request of {a.inputs} inputs, median ms | min ms | inputs/s | " + " | ".join(f"speed vs {n}" for n in anchors) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(anchors))
    for name, _ in runners:
        med = medians[name]
        ratios = " | ".join(f"{medians[n] / med:.2f}x" for n in anchors)
        print(f"| {name} | {med * 1e3:.0f} | {min(times[name]) * 1e3:.0f} | {a.inputs / med:.1f} | {ratios} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
