"""Run SpectralES on the COCO/BBOB suite and write data for cocopp.

COCO (https://github.com/numbbo/coco) is the standard test bed for
black-box optimisers; its ``bbob`` suite has 24 noiseless functions in
dimensions 2 to 40, each in several instances (shifted, rotated and
scaled versions). This script runs :func:`spectral_es.minimize` with IPOP
restarts on each problem until the final target ``f_opt + 1e-8`` is hit or
``--budget`` x dimension evaluations are spent. Each further independent run
starts from a new point proposed by COCO. The observer writes the data to
``--output``.

Install and run (offline once installed)::

    pip install coco-experiment
    python examples/coco_bbob.py --dims 2 3 5 --instances 1-5 --budget 1000

Post-processing: ``pip install cocopp six`` (cocopp 2.x imports ``six``
without declaring it), then ``python -m cocopp <output folder>`` writes an
HTML report to ``ppdata/``. When it is imported, cocopp tries to download
the list of archived results of other algorithms. Offline it warns that it
could not and carries on, and the report then shows SpectralES alone, or
with the reference data that ships inside the cocopp package. ``--postprocess``
runs that step at the end of this script if cocopp is installed.
"""

from __future__ import annotations

import argparse
import time
import warnings

import spectral_es

try:
    import cocoex
except ImportError as error:  # the example's only extra dependency
    raise SystemExit("this example needs COCO's experiment module: pip install coco-experiment") from error


def solve(problem, budget: int, seed: int) -> int:
    """Run IPOP SpectralES on ``problem`` until its final target or ``budget`` evaluations.

    Returns the number of independent runs made. Each run starts from
    ``problem.initial_solution_proposal()`` with ``sigma0 = 2``, a fifth of
    the ``[-5, 5]`` domain width, and a callback stops it as soon as COCO
    reports the final target hit.
    """
    runs = 0
    while problem.evaluations < budget and not problem.final_target_hit:
        x0 = problem.initial_solution_proposal()
        spectral_es.minimize(
            problem,
            x0,
            2.0,
            restarts=9,
            seed=seed + runs,
            max_evals=budget - problem.evaluations,
            callback=lambda result: problem.final_target_hit,
        )
        runs += 1
    return runs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Run SpectralES on the COCO bbob suite.")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3, 5], help="dimensions (bbob: 2 3 5 10 20 40)")
    parser.add_argument("--functions", default="1-24", help="function ids, e.g. 1-24 or 1,8,15")
    parser.add_argument("--instances", default="1-5", help="instance ids, e.g. 1-15")
    parser.add_argument("--budget", type=int, default=1000, help="evaluations per problem, times the dimension")
    parser.add_argument("--output", default="spectral-es", help="result folder, created under exdata/")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first run; later runs add 1 each")
    parser.add_argument("--postprocess", action="store_true", help="run cocopp on the results at the end")
    args = parser.parse_args(argv)
    if args.budget < 1:
        parser.error(f"--budget must be >= 1, got {args.budget}")

    dims = ",".join(str(n) for n in args.dims)
    suite = cocoex.Suite(
        "bbob", "", f"dimensions: {dims} function_indices: {args.functions} instance_indices: {args.instances}"
    )
    observer = cocoex.Observer("bbob", f"result_folder: {args.output} algorithm_name: SpectralES")
    start = time.perf_counter()
    solved = 0
    for index, problem in enumerate(suite):
        problem.observe_with(observer)
        runs = solve(problem, args.budget * problem.dimension, args.seed + 1000 * index)
        solved += bool(problem.final_target_hit)
        print(
            f"{problem.id}: {'hit' if problem.final_target_hit else 'missed'} the final target, "
            f"{problem.evaluations} evaluations, {runs} run(s)",
            flush=True,
        )
        problem.free()
    seconds = time.perf_counter() - start
    print(f"{solved} of {len(suite)} problems solved in {seconds:.0f} s; data in {observer.result_folder}")

    if args.postprocess:
        postprocess(observer.result_folder)


def postprocess(folder: str) -> None:
    """Run cocopp on ``folder``; without network access it warns and uses only local data."""
    try:
        with warnings.catch_warnings():
            # Offline, cocopp warns on import that it cannot fetch the list
            # of archived results; the local post-processing still works.
            warnings.simplefilter("ignore")
            import cocopp
    except ImportError as error:
        raise SystemExit("post-processing needs cocopp and six: pip install cocopp six") from error
    cocopp.main(["-o", "ppdata", folder])
    print("cocopp wrote its report to ppdata/index.html")


if __name__ == "__main__":
    main()
