"""What the Python scenario tests share: checks that print what passed, the
licence-text token shards they train on, and reading a run's losses."""
import json
import os
import shutil
import subprocess


class Fail(Exception):
    pass


def unavailable(message):
    """Exit code for a test whose environment lacks something: 77 (ctest's
    skip) with the message, but 1 under CI=true, where it must be there."""
    if os.environ.get("CI") == "true":
        print("FAILED:", message)
        return 1
    print("skipped:", message)
    return 77


def run_scenario(name, fn, *args):
    """Runs scenario fn(*args): exit code 0, or 1 with the failed check."""
    try:
        fn(*args)
    except Fail as e:
        print("FAILED:", e)
        return 1
    print("passed:", name)
    return 0


def check(cond, what):
    if not cond:
        raise Fail(what)
    print("ok:", what)


def prep_licences(shardtune, data, names, val_fraction=None):
    """Token shards DATA/lic-{train,val}-*.h5 (byte tokens) of Debian's
    licence texts `names`, made once."""
    if os.path.exists(os.path.join(data, "lic-train-00000.h5")):
        return
    os.makedirs(data, exist_ok=True)
    texts = []
    for name in names:
        dst = os.path.join(data, name + ".txt")
        shutil.copy(os.path.join("/usr/share/common-licenses", name), dst)
        texts += ["--input", dst]
    extra = ["--val-fraction", str(val_fraction)] if val_fraction else []
    subprocess.run([shardtune, "prep", "--tokenizer", "byte", *texts, "--output", os.path.join(data, "lic"),
                    *extra, "--overwrite"], check=True, stdout=subprocess.DEVNULL)


def losses(out):
    """step -> loss, the last record of each step (a resumed run appends)."""
    got = {}
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r["type"] == "train":
                got[r["step"]] = r["loss"]
    return got
