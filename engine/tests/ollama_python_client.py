"""Drive wardbox-engine with the official `ollama` Python client (PyPI `ollama`), unchanged.

Usage: python3 ollama_python_client.py http://127.0.0.1:PORT MODEL
Exits non-zero with a message on the first mismatch. Run by the Rust test
`model_python_ollama_client_works` (engine/tests/model_engine.rs).
"""
import sys

try:
    import ollama
except ImportError:
    sys.exit("the Python package `ollama` is missing: pip install ollama==0.6.3")


def check(cond, what):
    if not cond:
        sys.exit(f"ollama python client check failed: {what}")


host, model = sys.argv[1], sys.argv[2]
client = ollama.Client(host=host)

names = [m.model for m in client.list().models]
check(model in names, f"{model} in list() {names}")

shown = client.show(model)
check(shown.details is not None and shown.details.family, f"show() details {shown.details}")

gen = client.generate(model=model, prompt="The capital of France is", options={"temperature": 0, "num_predict": 8})
check(gen.done and gen.response, f"generate() {gen}")
check(gen.eval_count and gen.eval_count <= 8, f"generate() eval_count {gen.eval_count}")

parts = []
final = None
for chunk in client.chat(model=model, messages=[{"role": "user", "content": "Say hello."}],
                         stream=True, options={"temperature": 0, "num_predict": 16, "seed": 1}):
    if chunk.done:
        final = chunk
    else:
        parts.append(chunk.message.content)
check(final is not None, "chat stream ended with done")
check("".join(parts), "chat stream produced text")
check(final.done_reason in ("stop", "length"), f"done_reason {final.done_reason}")
check(final.prompt_eval_count and final.eval_count and final.total_duration, f"final stats {final}")

emb = client.embed(model=model, input=["first text", "second text"])
check(len(emb.embeddings) == 2 and len(emb.embeddings[0]) > 0, "embed() returns two vectors")

try:
    client.chat(model="no-such-model:1", messages=[{"role": "user", "content": "x"}])
    check(False, "unknown model must raise")
except ollama.ResponseError as e:
    check(e.status_code == 404, f"unknown model status {e.status_code}")

print("ok: list, show, generate, chat stream, embed, 404 via the ollama python client")
