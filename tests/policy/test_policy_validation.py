"""Policy files: parsing, share resolution and every validation error (named by its key).

Nothing here starts a backend: a bad policy must fail before any runtime exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from real_env import child_processes

from rhapsody_lab.api import Session
from rhapsody_lab.api.errors import SessionError
from rhapsody_lab.policy import PolicyError, build_backends, load_policy
from rhapsody_lab.resources import Allocation

TWO = Allocation(("n0",), (2,), (0,), "local")
CLUSTER = Allocation(("n0", "n1", "n2"), (4, 4, 8), (0, 2, 2), "slurm", "42")


def ok(**backends) -> dict:
    return {"backends": backends}


def error(policy, alloc=TWO) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_policy(policy, alloc)
    assert isinstance(info.value, SessionError)
    return info.value


@pytest.mark.parametrize("policy, key, words", [
    (ok(sim={"type": "fluxx", "cores": 1}), "backends.sim.type", "unknown backend type 'fluxx'"),
    (ok(sim={"cores": 1}), "backends.sim.type", "unknown backend type None"),
    (ok(sim={"type": "concurrent", "cores": 12}), "backends.sim.cores",
     "12 exceeds the allocation's 2 cores"),
    (ok(a={"type": "concurrent", "cores": 1.0}, b={"type": "dask", "cores": 1}),
     "backends.b.cores", "overlap the shares of a"),
    (ok(a={"type": "concurrent", "cores": "50%"}, b={"type": "dask", "cores": "100%"}),
     "backends.b.cores", "overlap"),
    (ok(sim={"type": "concurrent", "cores": "lots"}), "backends.sim.cores",
     "expected a count"),
    (ok(sim={"type": "concurrent", "cores": 1.5}), "backends.sim.cores", "fraction"),
    (ok(sim={"type": "concurrent", "cores": 0.1}), "backends.sim.cores", "less than one"),
    (ok(sim={"type": "concurrent", "gpus": 1}), "backends.sim.gpus",
     "1 exceeds the allocation's 0 GPUs"),
    (ok(sim={"type": "concurrent", "priority": "high"}), "backends.sim.priority",
     "must be an integer"),
    (ok(sim={"type": "concurrent", "limit": 0}), "backends.sim.limit", ">= 1"),
    (ok(sim={"type": "concurrent", "speed": 3}), "backends.sim.speed", "unknown key"),
    (ok(sim={"type": "concurrent", "options": ["x"]}), "backends.sim.options",
     "must be a mapping"),
    (ok(sim={"type": "concurrent", "options": {"name": "x"}}), "backends.sim.options.name",
     "its key"),
    (ok(sim="concurrent"), "backends.sim", "must be a mapping"),
    (ok(a={"type": "concurrent", "cores": 2}, b={"type": "dask"}), "backends.b.cores",
     "no cores left"),
    ({"backends": {}}, "backends", "non-empty mapping"),
    ({"backend": {"a": {"type": "concurrent"}}}, "backend", "unknown key"),
    ({**ok(a={"type": "concurrent"}), "routing": [{"kind": "function", "backend": "gpu"}]},
     "routing[0].backend", "'gpu' is not a backend of this policy"),
    ({**ok(a={"type": "concurrent"}), "routing": {"kind": "function"}}, "routing",
     "must be a list"),
    ({**ok(a={"type": "concurrent"}), "routing": [{"kind": "function"}]},
     "routing[0].backend", "missing"),
    ({**ok(a={"type": "concurrent"}), "routing": [{"kind": "mpi", "backend": "a"}]},
     "routing[0].kind", "unknown task kind 'mpi'"),
    ({**ok(a={"type": "concurrent"}), "routing": [{"kind": "ai", "backend": "a"}]},
     "routing[0].backend", "cannot run ai tasks"),
    ({**ok(a={"type": "concurrent"}), "routing": [{"backend": "a"}]}, "routing[0]",
     "matches every task"),
    ({**ok(a={"type": "concurrent"}), "routing": [{"tags": 3, "backend": "a"}]},
     "routing[0].tags", "string or a list"),
    ({**ok(a={"type": "concurrent"}), "routing": [{"min_cores": -1, "backend": "a"}]},
     "routing[0].min_cores", ">= 0"),
    ({**ok(a={"type": "concurrent"}), "routing": [{"tag": "x", "backend": "a"}]},
     "routing[0].tag", "unknown key"),
    ({**ok(a={"type": "concurrent"}), "default": "b"}, "default", "'b' is not a backend"),
])
def test_each_bad_policy_names_its_key(policy, key, words):
    e = error(policy)
    assert e.key == key
    assert str(e).startswith(f"{key}: ")
    assert words in str(e)


def test_nodes_overlap_and_oversize_on_a_cluster():
    e = error(ok(a={"type": "dask", "nodes": ["n0", "n1"]},
                 b={"type": "dragon", "nodes": ["n1"]}), CLUSTER)
    assert e.key == "backends.b.nodes" and "node 'n1' overlaps backend 'a'" in str(e)
    e = error(ok(a={"type": "dask", "nodes": ["n9"]}), CLUSTER)
    assert e.key == "backends.a.nodes[0]" and "'n9' is not a node" in str(e)
    e = error(ok(a={"type": "dask", "nodes": 2}, b={"type": "dragon", "nodes": 2}), CLUSTER)
    assert e.key == "backends.b.nodes" and "overlap" in str(e)
    e = error(ok(a={"type": "dask", "nodes": 4}), CLUSTER)
    assert e.key == "backends.a.nodes" and "4 exceeds the allocation's 3 nodes" in str(e)
    e = error(ok(a={"type": "dask", "nodes": 1, "cores": 5}), CLUSTER)
    assert e.key == "backends.a.cores" and "exceeds" in str(e)
    # the pool left after whole nodes is what node-less backends share
    e = error(ok(a={"type": "dask", "nodes": ["n2"]}, b={"type": "concurrent", "cores": 9}),
              CLUSTER)
    assert e.key == "backends.b.cores" and "8 cores" in str(e)


def test_shares_resolve_against_the_allocation():
    p = load_policy({
        "backends": {
            "sim": {"type": "dragon", "nodes": 1},
            "ml": {"type": "dask", "nodes": ["n2"], "gpus": 1, "priority": 2, "limit": 10},
            "fn": {"type": "concurrent", "cores": 0.5},
            "rest": {"type": "processes"},
            "llm": {"type": "vllm", "gpus": 2, "options": {"endpoint": "http://h:1/v1"}},
        },
        "routing": [{"kind": "executable", "backend": "sim"},
                    {"tags": ["train"], "min_gpus": 1, "backend": ["ml", "llm"]}],
        "default": "fn",
    }, CLUSTER)
    b = p.backends
    assert (b["sim"].nodes, b["sim"].cores, b["sim"].gpus) == (("n0",), 4, 0)
    assert (b["ml"].nodes, b["ml"].cores, b["ml"].gpus) == (("n2",), 8, 1)
    assert (b["ml"].priority, b["ml"].limit) == (2, 10)
    # n1 is the pool beside whole nodes: fn takes half of it, rest the remainder
    assert (b["fn"].cores, b["rest"].cores) == (2, 2)
    assert (b["llm"].cores, b["llm"].gpus) == (0, 2)
    assert [r.backends for r in p.rules] == [("sim",), ("ml", "llm")]
    assert p.default == "fn" and "sim: dragon cores=4" in p.summary()


def test_unsized_backends_split_the_rest_and_fractions_round_down():
    p = load_policy(ok(a={"type": "concurrent"}, b={"type": "dask"},
                       c={"type": "vllm", "options": {"endpoint": "http://h:1/v1"}}), TWO)
    assert [s.cores for s in p.backends.values()] == [1, 1, 0]
    p = load_policy(ok(a={"type": "concurrent", "cores": "50%"}, b={"type": "dask"}), TWO)
    assert [s.cores for s in p.backends.values()] == [1, 1]


def test_json_and_yaml_files(tmp_path):
    doc = {"backends": {"a": {"type": "concurrent", "cores": 1},
                        "b": {"type": "dask", "cores": 1}},
           "routing": [{"kind": "executable", "backend": "a"}], "default": "b"}
    js = tmp_path / "p.json"
    js.write_text(json.dumps(doc))
    assert load_policy(js, TWO).backends["a"].cores == 1
    ym = tmp_path / "p.yaml"
    ym.write_text(textwrap.dedent("""\
        backends:
          a: {type: concurrent, cores: 1}
          b: {type: dask, cores: 1}
        routing:
          - {kind: executable, backend: a}
        default: b
        """))
    assert load_policy(str(ym), TWO).default == "b"
    ym.write_text("backends: [unclosed")
    e = error(str(ym))
    assert "not valid YAML" in str(e)
    bad = tmp_path / "p.txt"
    bad.write_text("backends:\n  a: {type: concurrent}\n")
    e = error(str(bad))
    assert "not valid JSON" in str(e) and ".yaml" in str(e)
    e = error(str(tmp_path / "missing.json"))
    assert "cannot be read" in str(e)
    e = error(["not", "a", "policy"])
    assert "file path or a dict" in str(e)


def test_yaml_without_pyyaml_says_what_to_do(tmp_path):
    ym = tmp_path / "p.yml"
    ym.write_text("backends: {a: {type: concurrent}}\n")
    code = textwrap.dedent(f"""
        import sys
        sys.modules["yaml"] = None  # PyYAML not importable
        import rhapsody_lab.policy as p
        try:
            p.load_policy({str(ym)!r})
        except p.PolicyError as e:
            print("ERR", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert "ERR" in out.stdout and "PyYAML is not installed" in out.stdout, out.stderr


def test_engine_imports_no_yaml_and_no_runtime():
    code = ("import sys, rhapsody_lab.policy, rhapsody_lab.api.routing; "
            "print(sorted(m for m in ('yaml', 'distributed', 'dragon', 'aiohttp') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_backends_are_built_inside_their_shares():
    p = load_policy({"backends": {
        "exe": {"type": "concurrent", "cores": 1},
        "fn": {"type": "dask", "cores": 1, "options": {"resources": {"processes": False}}},
        "llm": {"type": "vllm", "options": {"base_url": "http://127.0.0.1:9/v1"}},
    }}, TWO)
    exe, fn, llm = build_backends(p)
    assert (exe.name, exe.capacity()) == ("exe", 1)
    assert fn.name == "fn" and fn._cluster_kwargs["n_workers"] == 1
    assert fn._cluster_kwargs["threads_per_worker"] == 1 and fn.capacity() == 1
    assert fn._cluster_kwargs["processes"] is False
    assert llm.name == "llm" and llm.endpoint == "http://127.0.0.1:9/v1"
    with pytest.raises(PolicyError) as info:
        build_backends(load_policy({"backends": {"x": {"type": "concurrent", "options": {
            "max_workers": "two"}}}}, TWO))
    assert info.value.key == "backends.x.options" and "max_workers" in str(info.value)


def _children() -> list[int]:
    return list(child_processes(zombies=True))


def test_a_bad_policy_starts_nothing():
    import threading

    kids, threads = set(_children()), threading.active_count()
    with pytest.raises(PolicyError, match=r"routing\[1\]\.backend"):
        Session.from_policy({"backends": {"a": {"type": "dask", "cores": 1}},
                             "routing": [{"kind": "function", "backend": "a"},
                                         {"kind": "executable", "backend": "b"}]}, TWO)
    # (other test modules may keep their own servers: only new ones would be ours)
    assert set(_children()) <= kids and threading.active_count() <= threads


def test_the_documented_example_policy_is_valid():
    pytest.importorskip("yaml", reason="PyYAML is not installed")
    path = os.path.join(os.path.dirname(__file__), "..", "..", "notebooks",
                        "policy-example.yaml")
    p = load_policy(path, TWO)
    assert {n: (b.type, b.cores) for n, b in p.backends.items()} == {
        "sim": ("concurrent", 1), "fn": ("dask", 1), "llm": ("vllm", 0)}
    assert p.backends["sim"].limit == 256 and p.default == "fn"
