"""Answers without a language model, refusals and follow-ups, over HTTP (the chat API).

    .venv/bin/python bench/answers.py [--set python|debian|both] [--data-dir DIR]
                                      [--json out.json]

Setup: a real ``ragd serve`` on 127.0.0.1 with no LLM configured (the extractive provider
only) gets one tenant and one collection per dev set; every file of the set's ``source/``
folder that ``MANIFEST.tsv`` lists as ``faq``, ``faq-alt-format`` or ``distractor`` is
uploaded as a file through the real API (the FAQ pages in both of their formats, as a user
with a documentation folder would) and every ingestion job is awaited. With ``--data-dir``
the ingested data is kept and the next run with the same directory skips the ingestion (so
an answer change is measured on the same index).

Measured:

1. **Answers** — every dev question (``queries.jsonl``) through ``POST /api/v1/chat`` on its
   set's collection. The answer's words (distinct ``\\w+``, lower-cased; the extractive
   preamble and the ``[n]`` markers removed) against the gold answer's (``answers.jsonl``):
   *coverage* = the share of questions whose answer holds >= 50 % of the gold answer's words
   (the same rule as ``ragd eval --from-source``), *recall* and *precision* = the means of
   |answer ∩ gold| / |gold| and / |answer|; also the answer length and the share of answers
   that repeat the question's own words as a line (a copied question heading).
2. **Refusals** — the same in-domain questions, and every question of
   ``bench/data/off_topic.tsv`` (written for this bench; asked over the whole tenant): the
   share answered ``grounded: false``. For calibration, each question's *relevance* (the best
   dense cosine of the hybrid search the chat runs: ``POST /api/v1/search``, ``top_k`` 6,
   ``explain``) is recorded, and the refusal rates a plain threshold on it would give are
   tabled.
3. **Follow-ups** — each conversation of ``bench/data/followups.jsonl`` through the chat API
   with a stored conversation: the last turn's ``search_query`` must keep the subject
   (``subject`` words) and be one question (not the previous question glued in front), and
   its answer must be grounded and hold the ``expect`` words.

Nothing here is timed; the numbers are the same on a loaded machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mimetypes
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "answers"
EVAL = common.REPO_ROOT.parent / "shared" / "eval"
DATA = common.BENCH_DIR / "data"
SETS = {"python": EVAL / "python-faq", "debian": EVAL / "debian-faq"}
MODEL_CACHE = Path(tempfile.gettempdir()) / "ragd-model-cache"
EMAIL, PASSWORD = "answers-bench@example.com", "Answers-bench-passphrase-51!"  # noqa: S105
STATE = "answers-bench.json"
ROLES = ("faq", "faq-alt-format", "distractor")
FINISHED = ("succeeded", "failed", "cancelled")
UPLOADERS = 4
SHARE = 0.5
TOP_K = 6
PREAMBLE = re.compile(r"\A\s*Extractive answer[^\n]*\n+")
MARKER = re.compile(r"\[\d+(?:,\s*\d+)*\]")
WORD = re.compile(r"\w+")
THRESHOLDS = [round(0.10 + 0.02 * i, 2) for i in range(26)]  # 0.10 .. 0.60


# -- data --------------------------------------------------------------------------------------


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def questions(name: str) -> list[dict[str, str]]:
    """The set's dev questions with their gold answers: ``{id, question, answer}``."""
    folder = SETS[name]
    answers = {row["query_id"]: row["answer"] for row in _jsonl(folder / "answers.jsonl")}
    return [{"id": row["_id"], "question": row["text"], "answer": answers[row["_id"]]}
            for row in _jsonl(folder / "queries.jsonl") if row["_id"] in answers]


def source_files(name: str) -> list[Path]:
    """The files of the set's ``source/`` folder with a role in :data:`ROLES`."""
    source = SETS[name] / "source"
    rows = (source / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    files = []
    for row in rows:
        path, role = row.split("\t")[:2]
        if role in ROLES:
            files.append(source / path)
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise RuntimeError(f"{len(missing)} source files are missing, e.g. {missing[0]}")
    return files


def off_topic() -> list[dict[str, str]]:
    lines = (DATA / "off_topic.tsv").read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.split("\t", 1) for line in lines if line.strip()]
    return [{"category": category, "question": question} for category, question in rows]


def followups() -> list[dict[str, Any]]:
    return _jsonl(DATA / "followups.jsonl")


# -- metrics -----------------------------------------------------------------------------------


def answer_text(answer: str) -> str:
    """The answer as a reader takes it in: no extractive preamble, no ``[n]`` markers."""
    return MARKER.sub("", PREAMBLE.sub("", answer))


def words(text: str) -> set[str]:
    return {word.lower() for word in WORD.findall(text)}


def overlap(answer: str, gold: str) -> tuple[float, float]:
    """(recall of the gold answer's words, precision of the answer's words)."""
    have, want = words(answer_text(answer)), words(gold)
    common_words = len(have & want)
    return common_words / max(1, len(want)), common_words / max(1, len(have))


def repeats_question(answer: str, question: str) -> bool:
    """Whether a line of the answer is the question itself (a copied question heading)."""
    asked = " ".join(WORD.findall(question.lower()))
    for line in answer_text(answer).splitlines():
        said = " ".join(WORD.findall(line.lower()))
        if said and (said == asked or (asked in said and len(said) < 1.3 * len(asked))):
            return True
    return False


def refusal_table(in_domain: dict[str, list[float]], off: list[float]) -> list[dict[str, Any]]:
    """For each threshold: the share of each question group a plain relevance threshold
    would refuse."""
    rows = []
    for threshold in THRESHOLDS:
        line: dict[str, Any] = {"threshold": threshold}
        for name, values in in_domain.items():
            line[f"{name}_refused"] = _share(v < threshold for v in values)
        line["off_topic_refused"] = _share(v < threshold for v in off)
        rows.append(line)
    return rows


GRID = [round(0.20 + 0.01 * i, 2) for i in range(41)]  # 0.20 .. 0.60
MAX_IN_DOMAIN_REFUSED = 0.05


def calibrate(in_domain: dict[str, list[list[float]]], off: list[float]) -> dict[str, Any]:
    """The gate chosen by two-fold cross-validation: fit on one set's in-domain questions
    (every variant given, e.g. source files and corpus) and every other off-topic question,
    test on the other set and the other half; the fit picks the threshold that maximises
    off-topic refused minus twice the worst in-domain refused, with no in-domain variant
    above 5 %. The default is the mean of the two folds' picks (rounded to 0.01)."""
    names = list(in_domain)
    halves = [off[1::2], off[0::2]]
    folds = []
    for index, (fit, test) in enumerate([(names[0], names[-1]), (names[-1], names[0])]):
        best: tuple[float, float] | None = None
        for threshold in GRID:
            refused = [_rate(values, threshold) for values in in_domain[fit]]
            if max(refused) > MAX_IN_DOMAIN_REFUSED:
                continue
            score = _rate(halves[index], threshold) - 2 * max(refused)
            if best is None or score > best[0]:
                best = (score, threshold)
        chosen = GRID[0] if best is None else best[1]
        folds.append({
            "fit": fit, "test": test, "threshold": chosen,
            "fit_in_domain_refused": [round(_rate(v, chosen), 4) for v in in_domain[fit]],
            "fit_off_topic_refused": round(_rate(halves[index], chosen), 4),
            "test_in_domain_refused": [round(_rate(v, chosen), 4) for v in in_domain[test]],
            "test_off_topic_refused": round(_rate(halves[1 - index], chosen), 4),
        })
    chosen = round(sum(f["threshold"] for f in folds) / len(folds) + 1e-9, 2)
    return {"folds": folds, "chosen": chosen,
            "in_domain_refused": {name: [round(_rate(v, chosen), 4) for v in values]
                                  for name, values in in_domain.items()},
            "off_topic_refused": round(_rate(off, chosen), 4)}


def _rate(values: list[float], threshold: float) -> float:
    return sum(v < threshold for v in values) / len(values) if values else 0.0


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return round(sum(values) / len(values), 4) if values else 0.0


# -- the server --------------------------------------------------------------------------------


class Client:
    """The bench's HTTP client: one tenant, its collections."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=300)
        self.headers: dict[str, str] = {}

    def close(self) -> None:
        self.http.close()

    def register_or_login(self) -> None:
        r = self.http.post("/api/v1/auth/register", json={
            "email": EMAIL, "password": PASSWORD, "tenant_name": "answers-bench"})
        if r.status_code == 409:  # noqa: PLR2004 - already registered (a kept data dir)
            r = self.http.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
        if r.status_code not in (200, 201):
            raise RuntimeError(f"register/login: {r.status_code} {r.text[:300]}")
        self.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

    def post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        r = self.http.post(path, headers=self.headers, **kwargs)
        if r.status_code >= 300:  # noqa: PLR2004
            raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:300]}")
        result: dict[str, Any] = r.json()
        return result

    def get(self, path: str) -> dict[str, Any]:
        r = self.http.get(path, headers=self.headers)
        if r.status_code >= 300:  # noqa: PLR2004
            raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:300]}")
        result: dict[str, Any] = r.json()
        return result


def _upload_all(base_url: str, client: Client, bodies: list[dict[str, Any]]) -> list[str]:
    """POST every body to /api/v1/documents from :data:`UPLOADERS` threads, then wait for
    every job; returns the jobs that did not succeed."""
    jobs: list[str] = []
    lock = threading.Lock()

    def upload(index: int) -> None:
        uploader = Client(base_url)
        uploader.headers = client.headers
        try:
            for body in bodies[index::UPLOADERS]:
                accepted = uploader.post("/api/v1/documents", **body)
                with lock:
                    jobs.append(accepted["job_id"])
        finally:
            uploader.close()

    common.run_clients(upload, UPLOADERS)
    failed = []
    for job_id in jobs:
        while (job := client.get(f"/api/v1/jobs/{job_id}"))["status"] not in FINISHED:
            time.sleep(0.5)
        if job["status"] != "succeeded":
            failed.append(f"{job_id}: {job.get('error')}")
    return failed


def _ingest(base_url: str, client: Client, names: list[str]) -> dict[str, Any]:
    """A collection per set, every source file uploaded, every job awaited."""
    started = time.perf_counter()
    collections: dict[str, str] = {}
    bodies: list[dict[str, Any]] = []
    for name in names:
        collections[name] = client.post("/api/v1/collections", json={"name": name})["id"]
        for path in source_files(name):
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            bodies.append({"data": {"collection_id": collections[name]},
                           "files": {"file": (path.name, path.read_bytes(), kind)}})
    failed = _upload_all(base_url, client, bodies)
    return {"collections": collections, "files": len(bodies), "failed": failed,
            "ingest_s": round(time.perf_counter() - started, 1)}


def _ingest_corpus(base_url: str, client: Client, names: list[str]) -> dict[str, Any]:
    """A collection per set holding its corpus.jsonl passages as text documents (title, and
    the passage without its question heading): the harder in-domain case for the gate."""
    started = time.perf_counter()
    collections: dict[str, str] = {}
    bodies: list[dict[str, Any]] = []
    for name in names:
        collections[name] = client.post("/api/v1/collections",
                                        json={"name": f"{name}-corpus"})["id"]
        bodies.extend({"json": {"collection_id": collections[name],
                                "title": row["title"] or row["_id"], "text": row["text"]}}
                      for row in _jsonl(SETS[name] / "corpus.jsonl"))
    failed = _upload_all(base_url, client, bodies)
    return {"corpus_collections": collections, "corpus_failed": failed,
            "corpus_ingest_s": round(time.perf_counter() - started, 1)}


def _relevance(client: Client, query: str, collection_ids: list[str] | None) -> float:
    """The best dense cosine among the chat's hits (-1 when the dense stage found none)."""
    body: dict[str, Any] = {"query": query, "mode": "hybrid", "top_k": TOP_K, "explain": True}
    if collection_ids is not None:
        body["collection_ids"] = collection_ids
    hits = client.post("/api/v1/search", json=body)["results"]
    scores = [hit["explain"]["dense"]["score"] for hit in hits
              if (hit.get("explain") or {}).get("dense")]
    return round(max(scores), 4) if scores else -1.0


def _chat(client: Client, question: str, collection_ids: list[str] | None,
          conversation_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"question": question}
    if collection_ids is not None:
        body["collection_ids"] = collection_ids
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    return client.post("/api/v1/chat", json=body)


# -- the measurements --------------------------------------------------------------------------


def measure_answers(client: Client, name: str, collection_id: str) -> dict[str, Any]:
    rows = []
    for item in questions(name):
        answer = _chat(client, item["question"], [collection_id])
        recall, precision = overlap(answer["answer"], item["answer"])
        rows.append({
            "id": item["id"], "question": item["question"], "grounded": answer["grounded"],
            "recall": round(recall, 4), "precision": round(precision, 4),
            "chars": len(answer_text(answer["answer"]).strip()),
            "repeats_question": repeats_question(answer["answer"], item["question"]),
            "citations": len(answer["citations"]),
            "cited_titles": sorted({c["title"] for c in answer["citations"]}),
            "relevance": _relevance(client, item["question"], [collection_id]),
            "answer": answer["answer"],
        })
    grounded = [r for r in rows if r["grounded"]]
    return {
        "questions": len(rows),
        "coverage": _share(r["recall"] >= SHARE for r in rows),
        "recall": round(statistics.fmean(r["recall"] for r in rows), 4),
        "precision": round(statistics.fmean(r["precision"] for r in grounded), 4)
        if grounded else 0.0,
        "refused": _share(not r["grounded"] for r in rows),
        "repeats_question": _share(r["repeats_question"] for r in rows),
        "median_chars": statistics.median(r["chars"] for r in rows),
        "rows": rows,
    }


def measure_off_topic(client: Client) -> dict[str, Any]:
    rows = []
    for item in off_topic():
        answer = _chat(client, item["question"], None)
        rows.append({**item, "grounded": answer["grounded"],
                     "relevance": _relevance(client, item["question"], None),
                     "cited_titles": sorted({c["title"] for c in answer["citations"]})})
    by_category = {}
    for category in sorted({r["category"] for r in rows}):
        group = [r for r in rows if r["category"] == category]
        by_category[category] = _share(not r["grounded"] for r in group)
    return {"questions": len(rows), "refused": _share(not r["grounded"] for r in rows),
            "refused_by_category": by_category, "rows": rows}


def measure_followups(client: Client, collections: dict[str, str]) -> dict[str, Any]:
    rows = []
    for conversation in followups():
        if conversation["set"] not in collections:
            continue
        scope = [collections[conversation["set"]]]
        conversation_id = None
        answer: dict[str, Any] = {}
        for turn in conversation["turns"]:
            answer = _chat(client, turn, scope, conversation_id)
            conversation_id = answer["conversation_id"]
        query = answer["retrieval"]["search_query"]
        said = answer_text(answer["answer"]).lower()
        row = {
            "turns": conversation["turns"], "search_query": query,
            "keeps_subject": all(w in query.lower() for w in conversation["subject"]),
            "one_question": query.count("?") <= 1
            and not any(t.lower() in query.lower() for t in conversation["turns"][:-1]),
            "grounded": answer["grounded"],
            "answer_has_expected": all(w in said for w in conversation["expect"]),
        }
        row["ok"] = row["keeps_subject"] and row["one_question"]
        rows.append(row)
    return {
        "conversations": len(rows),
        "rewrite_ok": _share(r["ok"] for r in rows),
        "keeps_subject": _share(r["keeps_subject"] for r in rows),
        "one_question": _share(r["one_question"] for r in rows),
        "grounded": _share(r["grounded"] for r in rows),
        "answer_has_expected": _share(r["answer_has_expected"] for r in rows),
        "rows": rows,
    }


def _state(data_dir: Path, names: list[str]) -> dict[str, Any] | None:
    path = data_dir / STATE
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return state if state.get("fingerprint") == _fingerprint(names) else None


def _fingerprint(names: list[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        for path in source_files(name):
            digest.update(f"{name}:{path.name}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def run(quick: bool = False, *, sets: list[str] | None = None,
        data_dir: Path | None = None, corpus: bool = False) -> dict[str, Any]:
    names = sets or list(SETS)
    scratch = None
    if data_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="ragd-answers-")
        data_dir = Path(scratch.name)
    data_dir.mkdir(parents=True, exist_ok=True)
    extra = {"RAGD_JWT_SECRET": _secret(data_dir), "RAGD_BOOTSTRAP_ADMIN": "false",
             "RAGD_ALLOW_REGISTRATION": "true",
             "RAGD_MODELS__CACHE_DIR": str(MODEL_CACHE), "RAGD_LOG_LEVEL": "WARNING"}
    result: dict[str, Any] = {"bench": NAME, "environment": common.environment(), "sets": names}
    try:
        with common.running_server(data_dir / "ragd", data_dir / "server.log", extra) as server:
            base_url = f"http://{common.LOOPBACK}:{server.port}"
            client = Client(base_url)
            try:
                client.register_or_login()
                state = _state(data_dir, names)
                if state is None:
                    ingest = _ingest(base_url, client, names)
                    state = {"fingerprint": _fingerprint(names), **ingest}
                    (data_dir / STATE).write_text(json.dumps(state), encoding="utf-8")
                if corpus and "corpus_collections" not in state:
                    state.update(_ingest_corpus(base_url, client, names))
                    (data_dir / STATE).write_text(json.dumps(state), encoding="utf-8")
                result["ingest"] = {k: v for k, v in state.items() if k != "fingerprint"}
                if corpus:
                    result["corpus_relevance"] = {
                        name: [_relevance(client, q["question"], [cid]) for q in questions(name)]
                        for name, cid in state["corpus_collections"].items()
                    }
                collections = state["collections"]
                result["answers"] = {name: measure_answers(client, name, collections[name])
                                     for name in names}
                result["off_topic"] = measure_off_topic(client)
                result["followups"] = measure_followups(client, collections)
            finally:
                client.close()
    finally:
        if scratch is not None:
            scratch.cleanup()
    in_domain = {name: [r["relevance"] for r in result["answers"][name]["rows"]]
                 for name in names}
    in_domain |= {f"{name}_corpus": values
                  for name, values in result.get("corpus_relevance", {}).items()}
    off = [r["relevance"] for r in result["off_topic"]["rows"]]
    result["refusal_table"] = refusal_table(in_domain, off)
    if len(names) == 2:  # noqa: PLR2004 - cross-validation needs both sets
        variants = {name: [in_domain[name], *([in_domain[f"{name}_corpus"]]
                                               if f"{name}_corpus" in in_domain else [])]
                    for name in names}
        result["calibration"] = calibrate(variants, off)
    return result


def _secret(data_dir: Path) -> str:
    """One JWT secret per kept data dir (a new one would not matter, but logs stay stable)."""
    path = data_dir / "jwt-secret"
    if not path.exists():
        path.write_text(common.bench_secret(), encoding="utf-8")
    return path.read_text(encoding="utf-8").strip()


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, answers in result["answers"].items():
        target = ">= 0.6" if name == "python" else ""
        status = common.verdict(answers["coverage"], 0.6, lower_is_better=False) if target else ""
        rows.append(common.row(f"{name}: answers holding >= 50 % of the gold words",
                               answers["coverage"], target=target, status=status))
        rows.append(common.row(f"{name}: gold-word recall (mean)", answers["recall"]))
        rows.append(common.row(f"{name}: answer-word precision (mean)", answers["precision"]))
        rows.append(common.row(f"{name}: in-domain refused", answers["refused"],
                               target="<= 0.05",
                               status=common.verdict(answers["refused"], 0.05)))
        rows.append(common.row(f"{name}: answers repeating the question",
                               answers["repeats_question"]))
        rows.append(common.row(f"{name}: median answer length", answers["median_chars"],
                               "chars"))
    off = result["off_topic"]
    rows.append(common.row("off-topic refused", off["refused"], target=">= 0.9",
                           status=common.verdict(off["refused"], 0.9, lower_is_better=False),
                           note=", ".join(f"{k} {v}" for k, v in
                                          off["refused_by_category"].items())))
    follow = result["followups"]
    rows.append(common.row("follow-ups rewritten well", follow["rewrite_ok"],
                           note=f"subject kept {follow['keeps_subject']}, one question "
                                f"{follow['one_question']}, answer has expected words "
                                f"{follow['answer_has_expected']}"))
    return rows


def render(result: dict[str, Any]) -> str:
    table = common.summary_table(summary_rows(result))
    sweep = common.format_table(
        list(result["refusal_table"][0]),
        [list(line.values()) for line in result["refusal_table"]],
    )
    text = f"{table}\n\nrefusals a plain relevance threshold would give:\n{sweep}"
    if "calibration" in result:
        text += "\n\ngate calibration (two folds):\n" + json.dumps(result["calibration"], indent=1)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=[*SETS, "both"], default="both")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the ingested data here (reused by the next run)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--corpus", action="store_true",
                        help="also measure the gate on corpus.jsonl (passages without their "
                        "question headings)")
    args = parser.parse_args(argv)
    sets = list(SETS) if args.set == "both" else [args.set]
    result = run(sets=sets, data_dir=args.data_dir, corpus=args.corpus)
    common.write_json(args.json, result)
    common.emit({k: v for k, v in result.items()
                 if k not in ("answers", "off_topic", "corpus_relevance")},
                render(result), json_only=args.json_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
