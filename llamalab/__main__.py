"""Command line: ``python -m llamalab {fetch-model,probe,bench,notebooks} ...``.

The CLI calls the same functions as the notebooks and tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _cmd_fetch_model(args) -> int:
    from . import models

    path = models.fetch_default_model(force=args.force)
    problems = models.verify_cache(path, full=True)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(path)
    return 0


def _cmd_probe(args) -> int:
    from . import config, models, probes

    prof = config.load_profile(args.profile) if args.profile else None
    limit = args.limit
    if limit is None and prof is not None:
        limit = prof.probes.limit.get(args.probe)
    model = tok = None
    spec = args.model or (prof.model.spec if prof else "default")
    if not args.predictions:
        dtype = args.dtype or (prof.probe_dtype(spec) if prof else "auto")
        model, tok = models.load_model(spec, dtype=dtype, adapter=args.adapter)
    batch = args.batch_size or (prof.generation.batch_size if prof else 8)
    result = probes.run_probe(args.probe, model, tok, data=args.data, limit=limit, chat=args.chat,
                              batch_size=batch, predictions=args.predictions,
                              model_spec=spec if not args.predictions else (args.model or "predictions"),
                              adapter=args.adapter, profile=prof.name if prof else None)
    out = Path(args.out) if args.out else probes.result_path(prof.name if prof else "adhoc", args.probe,
                                                               result["model"], args.adapter)
    probes.save_result(result, out)
    print(json.dumps(result["summary"], indent=1, default=str))
    print(f"results: {out}")
    return 0


def _cmd_bench(args) -> int:
    from . import bench

    if args.what == "generate":
        bench.bench_generate(args.model, new_tokens=args.new_tokens, n_prompts=args.prompts)
    elif args.what == "probes":
        bench.bench_probes(args.model, batch_size=args.batch_size)
    elif args.what == "train":
        bench.bench_train(args.profile or "cpu")
    elif args.what == "ppo":
        bench.bench_ppo(args.profile or "smoke")
    elif args.what == "gpu":
        from .gpubench import bench_gpu

        bench_gpu(tiny=args.tiny, smoke_chain=not args.no_smoke_chain, tokenizer=args.tokenizer,
                  json_path=args.json)
    return 0


def _cmd_notebooks(args) -> int:
    import papermill as pm

    from . import paths

    nb_dir = paths.notebooks_dir()
    out_dir = paths.runs_dir() / args.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(o) for o in args.only)]
    os.environ["LLAMALAB_PROFILE"] = args.profile
    done = []
    for nb in notebooks:
        target = out_dir / nb.name
        t0 = time.perf_counter()
        print(f"[llamalab] executing {nb.name} in the {args.profile} profile ...", flush=True)
        pm.execute_notebook(str(nb), str(target), parameters={"PROFILE": args.profile}, kernel_name="python3",
                            cwd=str(nb_dir), progress_bar=False, log_output=False)
        done.append((target, time.perf_counter() - t0))
    print("\nexecuted notebooks:")
    for target, secs in done:
        print(f"  {target}  ({secs:.0f} s)")
    print(f"artifacts: {out_dir}")
    return 0


def _cmd_train(args) -> int:
    from . import config

    prof = config.apply_overrides(config.load_profile(args.profile), args.set)
    if args.data and args.stage != "reward":
        raise ValueError(f"--data: only the reward stage reads a preference file, not {args.stage}")
    if args.stage == "sft":
        from .train.sft import train_sft

        m = train_sft(prof, resume=args.resume)
    elif args.stage == "reward":
        from .train.reward import train_reward

        m = train_reward(prof, resume=args.resume, data=args.data)
    elif args.stage == "ppo":
        from .train.ppo import train_ppo

        m = train_ppo(prof)
    else:
        from .train.rloo import train_rloo

        m = train_rloo(prof)
    shown = {k: v for k, v in m.items() if not isinstance(v, (list, dict)) or k in ("first_update", "last_update")}
    print(json.dumps(shown, indent=1, default=str))
    print(f"artifacts: {prof.stage_dir(args.stage)}")
    return 0


def _cmd_heldout(args) -> int:
    from . import config
    from .train import heldout

    if args.best_of and args.best_of < 2:
        raise ValueError(f"--best-of {args.best_of}: needs at least 2 samples per prompt")
    if args.samples is not None and args.samples < 1:
        raise ValueError(f"--samples {args.samples}: needs at least 1 response per prompt")
    prof = config.load_profile(args.profile)
    if args.rescore or args.reward:
        if not (args.rescore and args.reward):
            raise ValueError("--rescore REPORT and --reward DIR go together: the report's responses, scored by that "
                             "reward model")
        if args.policies or args.best_of or args.samples is not None or args.limit:
            raise ValueError("--rescore samples nothing: --policies, --samples, --limit and --best-of do not apply")
        if not (Path(args.reward) / "config.json").is_file():
            raise FileNotFoundError(f"{args.reward}: no merged reward model here (config.json and weights)")
        report = heldout.rescore(prof, json.loads(Path(args.rescore).read_text()), args.reward)
        out = Path(args.json) if args.json else Path(args.rescore).with_name(Path(args.rescore).stem + ".rescored.json")
        print(f"{args.rescore} scored by {args.reward}:")
        return _write_heldout_report(report, out, heldout.summary_lines(report))
    policies: dict[str, Path] = {}
    for item in args.policies or ["ppo", "rloo"]:
        label, sep, where = item.partition("=")
        if not sep and label not in ("ppo", "rloo"):
            raise ValueError(f"--policies {item}: expected ppo, rloo or LABEL=DIR (a merged policy directory)")
        if sep and (not label or label == "sft" or label in policies):
            raise ValueError(f"--policies {item}: the label before '=' must be new and not 'sft'")
        path = Path(where) if sep else prof.stage_dir(label) / "merged"
        if not (path / "config.json").is_file():
            hint = (f"run `python -m llamalab train {label} --profile {prof.name}` first" if not sep
                    else "expected a merged model directory (config.json and weights)")
            raise FileNotFoundError(f"{path}: no merged {label} policy; {hint}")
        policies[label] = path
    report = heldout.evaluate_policies(prof, policies, limit=args.limit, best_of=args.best_of,
                                       samples_per_prompt=args.samples)
    out = Path(args.json) if args.json else prof.stage_dir("heldout") / "heldout.json"
    lines = heldout.summary_lines(report)
    if args.best_of:
        lines += heldout.best_of_n_lines(report["best_of_n"])
    return _write_heldout_report(report, out, lines)


def _write_heldout_report(report: dict, out: Path, lines: list[str]) -> int:
    """Write a held-out report (atomically: ``--rescore R --json R`` cannot lose R) and print its summary."""
    from .train import common

    common.write_json(out, report)
    for line in lines:
        print(line)
    print(f"report: {out}")
    return 0


def _cmd_reward_pairs(args) -> int:
    from . import config, paths
    from .train.reward import DEFAULT_DATA, execution_pairs

    prof = config.load_profile(args.profile)
    res = execution_pairs(prof, samples=args.samples, model_dir=args.policy)
    name = "policy_mistakes.jsonl" if args.pairs_only else "execution_pairs.jsonl"
    out = Path(args.out) if args.out else prof.stage_dir("reward") / name
    out.parent.mkdir(parents=True, exist_ok=True)
    synthetic = "" if args.pairs_only else (paths.data_dir() / DEFAULT_DATA).read_text()
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text((synthetic.rstrip("\n") + "\n" if synthetic else "") + "".join(json.dumps(p) + "\n" for p in res["pairs"]))
    tmp.replace(out)
    who = f"samples of {args.policy}" if args.policy else "SFT samples"
    after = "" if args.pairs_only else f" after the data set's {len(synthetic.splitlines())}"
    print(f"{res['samples']} {who} on {res['prompts']} SQL training prompts, {res['correct']} correct when run; "
          f"{len(res['pairs'])} pairs (reference or a correct query over a wrong one){after}: {out}")
    return 0


def _cmd_reward(args) -> int:
    from .train.reward import load_reward_model, pairwise_metrics
    from .trainsets import load_preferences

    model, tok = load_reward_model(args.model)
    pairs = load_preferences(args.data)
    if args.split:
        pairs = [p for p in pairs if p.get("split", "train") == args.split]
    m = pairwise_metrics(model, tok, pairs)
    print(f"pairs: {m['n']}  pairwise accuracy: {m['pairwise_accuracy']:.3f}  mean margin: {m['mean_margin']:.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .probes import PROBES

    p = argparse.ArgumentParser(prog="python -m llamalab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch-model", help="fetch and convert the default model into the cache")
    f.add_argument("--force", action="store_true", help="fetch again even if the cache looks complete")
    f.set_defaults(func=_cmd_fetch_model)

    pr = sub.add_parser("probe", help="run one probe and write a results JSON")
    pr.add_argument("probe", choices=PROBES)
    pr.add_argument("--model", help="'default', 'tiny', a hub id or a local directory (default: the profile's)")
    pr.add_argument("--adapter", help="a PEFT adapter directory to apply")
    pr.add_argument("--data", help="probe data JSONL (default: data/probes/...)")
    pr.add_argument("--limit", type=int, help="score only N items (a seeded sample)")
    pr.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    pr.add_argument("--profile", help="take model, dtype, batch size and limit from this profile")
    pr.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"])
    pr.add_argument("--batch-size", type=int)
    pr.add_argument("--predictions", help="JSONL of {id, completion}: score these instead of generating")
    pr.add_argument("--out", help="results JSON (default runs/<profile>/probes/<probe>__<model>.json)")
    pr.set_defaults(func=_cmd_probe)

    b = sub.add_parser("bench", help="benchmarks that print measured figures beside their baseline")
    b.add_argument("what", choices=["generate", "probes", "train", "ppo", "gpu"])
    b.add_argument("--tiny", action="store_true", help="gpu: a small config, to check the code path on CPU")
    b.add_argument("--no-smoke-chain", action="store_true", help="gpu: skip the default model's smoke chain")
    b.add_argument("--tokenizer", help="gpu: tokenizer directory for the 7B-shaped model (default: the default model's)")
    b.add_argument("--json", help="gpu: also write the report to this JSON file")
    b.add_argument("--profile", help="train/ppo: the profile whose settings (and, for ppo, stages) to use")
    b.add_argument("--model", default="default")
    b.add_argument("--new-tokens", type=int, default=64)
    b.add_argument("--prompts", type=int, default=8)
    b.add_argument("--batch-size", type=int, default=16)
    b.set_defaults(func=_cmd_bench)

    t = sub.add_parser("train", help="run a stage of the recipe: sft, reward, ppo (or rloo)")
    t.add_argument("stage", choices=["sft", "reward", "ppo", "rloo"])
    t.add_argument("--profile", default="cpu")
    t.add_argument("--resume", action="store_true", help="continue from the stage's last checkpoint")
    t.add_argument("--data", help="reward: train on this preference JSONL instead of data/train/preferences.jsonl "
                                  "(e.g. the file `reward pairs` writes)")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="change one profile setting for this run, e.g. --set rloo.max_steps=60 (repeatable); "
                        "the stage still writes runs/<profile>/<stage>/, and its run_info.json records the change")
    t.set_defaults(func=_cmd_train)

    h = sub.add_parser("heldout", help="RL policies vs the SFT model on the held-out prompts: reward-model "
                                       "score and KL")
    h.add_argument("--profile", default="cpu")
    h.add_argument("--policies", nargs="+", metavar="POLICY",
                   help="ppo, rloo (the profile's stages; the default) or LABEL=DIR (any merged policy, e.g. one "
                        "trained with other settings under another LLAMALAB_RUNS)")
    h.add_argument("--limit", type=int, help="only the first N held-out prompts")
    h.add_argument("--samples", type=int, metavar="N",
                   help="responses per prompt from every policy (default: the profile's heldout.samples_per_prompt, "
                        "else 1): gains are taken on per-prompt means, in the SD of single SFT samples")
    h.add_argument("--best-of", type=int, default=0, metavar="N",
                   help="also sample N responses per prompt from the SFT model and print the best-of-k curve "
                        "(k = 1, 2, 4, ..., N): the reward plain sampling reaches at each KL, the baseline an RL "
                        "policy has to beat")
    h.add_argument("--json", help="report file (default runs/<profile>/heldout/heldout.json; with --rescore, "
                                  "REPORT.rescored.json beside it)")
    h.add_argument("--rescore", metavar="REPORT", help="score a saved report's responses again with --reward (nothing "
                                                       "is sampled): does another reward model pay for the same answers?")
    h.add_argument("--reward", metavar="DIR", help="with --rescore: a merged reward model directory")
    h.set_defaults(func=_cmd_heldout)

    r = sub.add_parser("reward", help="reward-model utilities")
    rs = r.add_subparsers(dest="reward_command", required=True)
    sc = rs.add_parser("score", help="pairwise accuracy of a merged reward model on a preference file")
    sc.add_argument("--model", required=True, help="a merged reward model directory (runs/<profile>/reward/merged)")
    sc.add_argument("--data", required=True, help="preference JSONL {prompt, chosen, rejected}")
    sc.add_argument("--split", choices=["train", "eval"], help="only rows of this split")
    sc.set_defaults(func=_cmd_reward)
    pa = rs.add_parser("pairs", help="preference pairs from the SFT model's own SQL, labelled by running it; "
                                     "writes the data set's pairs followed by these, for `train reward --data`")
    pa.add_argument("--profile", default="cpu")
    pa.add_argument("--samples", type=int, default=4, help="responses per SQL training prompt")
    pa.add_argument("--policy", metavar="DIR", help="sample this merged model instead of the SFT model (an RL "
                                                    "policy: its mistakes, for data.policy_pairs)")
    pa.add_argument("--pairs-only", action="store_true",
                    help="write only the sampled pairs (the file data.policy_pairs_from reads), not the data set's first")
    pa.add_argument("--out", help="JSONL to write (default runs/<profile>/reward/execution_pairs.jsonl, or "
                                  "policy_mistakes.jsonl with --pairs-only)")
    pa.set_defaults(func=_cmd_reward_pairs)

    n = sub.add_parser("notebooks", help="execute the numbered notebooks into runs/<profile>/")
    n.add_argument("--profile", default="cpu")
    n.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 03")
    n.set_defaults(func=_cmd_notebooks)
    return p


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .data import DataError
    from .models import ModelError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.func is _cmd_train:
        from . import launch

        if n := launch.accelerate_cpu_processes():  # `accelerate launch --cpu --num_processes N`, no mpirun
            return launch.relaunch(n, argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, ModelError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
