"""Management commands: output and exit codes (0 ok, 1 failed/incoherent,
2 usage), against the session's memcached (LISTY_TEST_STORE=memcached) or the
embedded store; the exit codes of real ``manage.py`` processes too."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from io import StringIO

import pytest

import listy
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command, load_command_class
from django.test import override_settings

from listy.management.commands._util import Progress
from listy.store import get_store
from tests.conftest import ROOT, process_env
from tests.testapp.models import Follow, Friend

pytestmark = pytest.mark.django_db(transaction=True)


def test_listy_flush(users, django_assert_num_queries):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(follower=me)
    out = StringIO()
    call_command("listy_flush", "testapp.Follow", stdout=out)
    assert "flushed testapp.Follow" in out.getvalue()
    with django_assert_num_queries(1):
        assert len(Follow.cache.get(follower=me)) == 1


def test_listy_flush_all_and_errors(users):
    out = StringIO()
    call_command("listy_flush", "--all", stdout=out)
    assert "testapp.Follow" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("listy_flush")
    with pytest.raises(CommandError):
        call_command("listy_flush", "auth.User")


def test_listy_stats(users):
    from django.conf import settings
    from django.test import override_settings

    me, you = users[:2]
    out = StringIO()
    call_command("listy_stats", stdout=out)
    assert "testapp.Follow: indexes (pk), (follower), (follower, followee); shared counts off" in out.getvalue()
    with override_settings(LISTY={**settings.LISTY, "STATS_INTERVAL": 3600}):
        Follow.objects.bulk_create([Follow(follower=me, followee=you)])  # no list built
        Follow.cache.get(follower=me)  # a miss: the first read publishes (0 hits, 1 miss)
        Follow.cache.get(follower=me)  # a hit, published in an hour
        out = StringIO()
        call_command("listy_stats", stdout=out)
        text = out.getvalue()
    assert text.startswith("store: ")
    assert Follow.cache.hits == 1
    assert (
        "testapp.Follow: indexes (pk), (follower), (follower, followee); "
        "hits 0, misses 1, hit ratio 0.0% (all processes)"
    ) in text


@pytest.fixture
def shared_stats_env(monkeypatch):
    """Shared counts on in the second process (set before ``other_process``
    takes the environment)."""
    monkeypatch.setenv("LISTY_TEST_STATS_INTERVAL", "3600")


def test_listy_stats_counts_every_process(users, shared_stats_env, other_process):
    """A second OS process's hit reaches the counts this one prints."""
    from django.conf import settings
    from django.test import override_settings

    me, you = users[:2]
    with override_settings(LISTY={**settings.LISTY, "STATS_INTERVAL": 3600}):
        Follow.objects.bulk_create([Follow(follower=me, followee=you)])
        Follow.cache.get(follower=me)  # this process: 1 miss, published
        assert other_process("list", me.pk)[-1] == "queries=0"  # the other: 1 hit, published
        out = StringIO()
        call_command("listy_stats", "testapp.Follow", stdout=out)
    assert Follow.cache.hits == 0
    assert "hits 1, misses 1, hit ratio 50.0% (all processes)" in out.getvalue()


# ---------------------------------------------------------------- helpers
COMMANDS = ["listy_inspect", "listy_check", "listy_warm", "listy_stats", "listy_flush", "listy_schema"]


class TTY(StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def run(*args: str) -> tuple[str, str]:
    """call_command → (stdout, stderr); CommandError propagates."""
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def fails(*args: str) -> tuple[int, str, str]:
    """call_command that must raise CommandError → (returncode, message, stdout)."""
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as info:
        call_command(*args, stdout=out, stderr=err)
    return info.value.returncode, str(info.value), out.getvalue()


def many_follows(follower, n: int) -> None:
    """n follows of ``follower`` written behind Listy's back (bulk_create)."""
    others = User.objects.bulk_create([User(username=f"bulk{follower.pk}-{i}") for i in range(n)])
    with listy.bypass(Follow):
        Follow.objects.bulk_create([Follow(follower=follower, followee=u) for u in others])


@pytest.fixture
def manage(transactional_db, memcached_server):  # type: ignore[no-untyped-def]
    """Runs ``python -m django <command>`` in another process that shares
    the test database and memcached; returns (exit code, stdout, stderr)."""
    if memcached_server is None:
        pytest.skip("the embedded store is not shared between processes")
    env = process_env(memcached_server.address)

    def call(*args: str) -> tuple[int, str, str]:
        # --skip-checks: the exit code is the command's own, not the checks'
        done = subprocess.run(
            [sys.executable, "-m", "django", *args, "--skip-checks"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        return done.returncode, done.stdout, done.stderr

    return call


# ---------------------------------------------------------------- every command
@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name):
    command = load_command_class("listy", name)
    text = command.create_parser("manage.py", name).format_help()
    assert f"usage: manage.py {name}" in text
    assert command.help.split()[0] in text
    assert len(command.help) > 40


# ---------------------------------------------------------------- listy_inspect
def test_listy_inspect_shows_key_server_hexdump_and_frames(users):
    me, a, b, c, d = users
    Follow.cache.add(follower=me, followee=a)
    Follow.cache.add(follower=me, followee=b)
    Follow.cache.add(follower=me, followee=c)
    pk_b = Follow.objects.get(follower=me, followee=b).pk
    Follow.cache.delete(follower=me, followee=b)  # a final tombstone
    moved = Follow.objects.get(follower=me, followee=c)
    moved.followee = d  # an update frame (the row stays in me's list)
    moved.save()
    assert [f.followee_id for f in Follow.cache.get(follower=me)] == [d.pk, a.pk]
    key = Follow.cache.key(follower=me)

    out, err = run("listy_inspect", "testapp.Follow", f"follower={me.pk}", "--rows")
    assert err == ""  # not a terminal: no progress, nothing on stderr
    lines = out.splitlines()
    assert f"key:      {key}" in lines
    assert f"server:   {get_store().server_for(key)}" in lines
    size = len(get_store().get_raw(key))
    assert f"size:     {size} bytes" in lines
    assert any(line.startswith("trailer:  a whole list; format v2") for line in lines)
    assert "state:    cached, 2 live records of 5 frames" in lines
    # the hex dump: offset | 16 bytes | ascii, which ends with the trailer's "LY"
    rows = [line for line in lines if re.match(r"^  [0-9a-f]{8} \| ", line)]
    assert len(rows) == (size + 15) // 16
    assert re.match(r"^  00000000 \| a4( [0-9a-f]{2}){7}  [0-9a-f]{2}( [0-9a-f]{2}){7} \| .{16}$", rows[0])
    # (the trailer may straddle two rows: the record sizes follow the pks' sizes)
    assert "".join(row.split(" | ", 2)[2] for row in rows).endswith("LY")
    frames = [line.split() for line in lines[lines.index("frames (newest first):") + 2 :]]
    kinds = [(f[2], int(f[3]) if len(f) > 3 and f[3].isdigit() else None, "live" in f) for f in frames]
    pk_a = Follow.objects.get(follower=me, followee=a).pk
    assert kinds == [
        ("update", moved.pk, True),
        ("final-tombstone", pk_b, False),
        ("record", moved.pk, False),
        ("record", pk_b, False),
        ("record", pk_a, True),
        ("trailer", None, False),
    ]
    assert f"({moved.pk}, " in out  # --rows decodes the live records


def test_listy_inspect_segmented_list_shows_the_head(users):
    me = users[0]
    many_follows(me, 400)
    records = Follow.cache.get(follower=me)
    assert len(records) == 400
    key = Follow.cache.key(follower=me)
    out, _ = run("listy_inspect", "testapp.Follow", f"follower={me.pk}", "--hex-limit", "32", "--max-frames", "3")
    trailer = [line for line in out.splitlines() if line.startswith("trailer:")][0]
    segments = int(re.search(r"head of a list with (\d+) segments?;", trailer).group(1))
    assert segments >= 1
    assert f"stored in {segments + 1} parts: this head and {segments} segment" in out
    assert f"{key}@" in out
    assert "more bytes (--hex-limit 0 shows all)" in out
    assert "more frames (--max-frames 0 lists all)" in out
    # listy_check counts it as cached (determine_coherency reads segmented
    # heads) and coherent; its bytes are those of every part
    out, _ = run("listy_check", "testapp.Follow")
    row = [line.split() for line in out.splitlines() if line.startswith("testapp.Follow")][0]
    # 400 (pk,) lists + 1 (follower,) + 400 (follower, followee): only me's is cached
    assert row[1:5] == ["801", "1", "1", "0"]
    assert row[-1] == "400"
    assert f"{records.size / 1024:.1f} KiB" in out


def test_listy_inspect_by_raw_key(users):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(follower=me)
    key = Follow.cache.key(follower=me)
    by_filters, _ = run("listy_inspect", "testapp.Follow", f"follower_id={me.pk}")
    by_key, _ = run("listy_inspect", "--key", key)
    assert by_key == by_filters
    assert "state:    cached, 1 live records of 1 frames" in by_key
    # a key that is no current list (the model's meta value): shown raw
    meta = key.split(":")[0] + ":testapp.Follow:m"
    out, _ = run("listy_inspect", "--key", meta)
    assert "shown raw, frames not decoded" in out
    assert f"server:   {get_store().server_for(meta)}" in out
    assert "00000000 | " in out
    # nothing under the key: exit 0, says so
    out, _ = run("listy_inspect", "--key", key + "0")
    assert "not cached" in out


def test_listy_inspect_not_cached_and_usage_errors(users):
    me = users[0]
    out, _ = run("listy_inspect", "testapp.Follow", f"follower={me.pk}")
    assert "state:    not cached" in out
    assert Follow.cache.key(follower=me) in out
    for args in [
        ("listy_inspect",),                                            # nothing named
        ("listy_inspect", "testapp.Follow", "followee=1"),             # no such index
        ("listy_inspect", "testapp.Follow", "follower"),               # not field=value
        ("listy_inspect", "testapp.Nope", "follower=1"),               # no such model
        ("listy_inspect", "auth.User", "pk=1"),                        # not cached
        ("listy_inspect", "testapp.Follow", "follower=x"),             # bad value
        ("listy_inspect", "--key", "k", "testapp.Follow", "follower=1"),
    ]:
        code, message, _ = fails(*args)
        assert code == 2, (args, message)


def test_listy_inspect_flags_a_value_that_is_no_list(users):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    key = Follow.cache.key(follower=me)
    get_store().set_raw(key, b"\xa1\x02garbage")
    code, message, out = fails("listy_inspect", "testapp.Follow", f"follower={me.pk}")
    assert code == 1
    assert "NOT a readable list" in out
    assert "not a readable list" in message
    assert len(Follow.cache.get(follower=me)) == 1  # readers treat it as a miss


# ---------------------------------------------------------------- listy_check
def test_listy_check_coherent_then_incoherent_then_fixed(users):
    me, a, b, c, _ = users
    Follow.cache.add(follower=me, followee=a)
    Follow.cache.add(follower=me, followee=b)
    Follow.cache.get(follower=me)
    out, err = run("listy_check", "testapp.Follow")
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["model", "lists", "cached", "coherent", "incoherent", "bytes", "records"]
    # 2 (pk,) lists, 1 (follower,), 2 (follower, followee): add() built them all
    assert lines[2].split()[:5] == ["testapp.Follow", "5", "5", "5", "0"]
    assert lines[2].split()[-1] == "6"
    assert lines[-1] == "all cached lists are coherent"

    # a write behind Listy's back (bulk_create sends no signal)
    with listy.bypass(Follow):
        Follow.objects.bulk_create([Follow(follower=me, followee=c)])
    key = Follow.cache.key(follower=me)
    code, message, out = fails("listy_check", "testapp.Follow")
    assert code == 1
    assert "1 incoherent cached lists (listy_check --fix rebuilds them)" in message
    assert f"incoherent: testapp.Follow (follower_id={me.pk}) {key}" in out
    assert out.splitlines()[2].split()[:5] == ["testapp.Follow", "7", "5", "4", "1"]

    out, _ = run("listy_check", "--fix", "testapp.Follow")
    assert "rebuilt 1 incoherent lists of testapp.Follow" in out
    after = out.split("after --fix:")[1].splitlines()
    # rebuild(follower=me) also built the new (follower, followee) list
    assert after[3].split()[:5] == ["testapp.Follow", "7", "6", "6", "0"]
    assert out.splitlines()[-1] == "all cached lists are coherent"
    assert [f.followee_id for f in Follow.cache.get(follower=me)] == [c.pk, b.pk, a.pk]


def test_listy_check_every_model_and_usage(users):
    out, _ = run("listy_check")
    models = [line.split()[0] for line in out.splitlines()[2:] if line.startswith(("testapp.", "total"))]
    assert models == [
        "testapp.Bookmark",
        "testapp.Comment",
        "testapp.Entry",
        "testapp.Follow",
        "testapp.Friend",
        "testapp.Mark",
        "testapp.Sample",
        "testapp.Team_members",
        "total",
    ]
    assert fails("listy_check", "auth.User")[0] == 2
    assert fails("listy_check", "nope")[0] == 2


def test_listy_check_draws_progress_only_on_a_terminal(users):
    me = users[0]
    many_follows(me, 30)
    Follow.cache.get(follower=me)
    out, err = StringIO(), TTY()
    call_command("listy_check", "testapp.Follow", stdout=out, stderr=err)
    drawn = err.getvalue()
    assert drawn.startswith("\rchecking testapp.Follow [")
    assert "61/61 100%" in drawn  # 30 (pk,) + 1 (follower,) + 30 pairs
    assert drawn.endswith("\n")
    out, err = StringIO(), StringIO()
    call_command("listy_check", "testapp.Follow", stdout=out, stderr=err)
    assert err.getvalue() == ""


def test_progress_helper():
    tty = TTY()
    with Progress(tty, "working", 4) as bar:
        for _ in bar.iterate(range(4)):
            pass
    text = tty.getvalue()
    assert text.startswith("\rworking [") and "4/4 100%" in text and text.endswith("\n")
    assert "#" * Progress.WIDTH in text
    unknown = TTY()
    with Progress(unknown, "counting") as bar:
        bar.advance(7)
    assert "counting 7" in unknown.getvalue()
    pipe = StringIO()
    with Progress(pipe, "quiet", 3) as bar:
        bar.advance(3)
    assert pipe.getvalue() == ""


# ---------------------------------------------------------------- listy_warm
def test_listy_warm_fills_lists_ahead_of_traffic(users, django_assert_num_queries):
    followers = users[:3]
    for follower in followers:
        many_follows(follower, 3)
    out, err = run("listy_warm", "testapp.Follow", "--index", "follower", "--batch", "2")
    assert err == ""
    assert "testapp.Follow (follower_id): 3 lists, 3 built, 0 already cached" in out
    assert re.search(r"warmed testapp.Follow: 3 lists \(3 built\) in [\d.]+s, \d+ lists/s", out)
    Follow.cache.reset_local_stats()
    with django_assert_num_queries(0):
        for follower in followers:
            assert len(Follow.cache.get(follower=follower)) == 3
    assert (Follow.cache.hits, Follow.cache.misses) == (3, 0)
    # a second run finds them cached; the pairs index is named by two fields
    out, _ = run("listy_warm", "testapp.Follow", "--index", "follower", "--index", "followee,follower")
    assert "testapp.Follow (follower_id): 3 lists, 0 built, 3 already cached" in out
    assert "testapp.Follow (followee_id,follower_id): 9 lists, 9 built, 0 already cached" in out
    # every index by default; a progress bar on a terminal
    out, err = StringIO(), TTY()
    call_command("listy_warm", "testapp.Follow", stdout=out, stderr=err)
    assert "testapp.Follow (id): 9 lists, 9 built" in out.getvalue()
    assert "warming testapp.Follow (id) [" in err.getvalue() and "9/9 100%" in err.getvalue()


def test_listy_warm_usage_errors(users):
    assert fails("listy_warm", "testapp.Follow", "--index", "followee")[0] == 2
    assert fails("listy_warm", "testapp.Follow", "--index", "nope")[0] == 2
    assert fails("listy_warm", "testapp.Follow", "--batch", "0")[0] == 2
    assert fails("listy_warm", "auth.User")[0] == 2


# ---------------------------------------------------------------- listy_stats
def test_listy_stats_per_server_hit_ratio(users, memcached_server):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(follower=me)
    out, _ = run("listy_stats", "testapp.Follow")
    lines = out.splitlines()
    header = lines[1].split()
    assert header == ["server", "items", "bytes", "limit", "evictions", "get_hits", "get_misses", "hit", "ratio"]
    row = lines[3].split()
    if memcached_server is None:
        assert row[0] == "local:default"
    else:
        assert row[0] == memcached_server.address
        stats = {name: value for _, name, value in get_store().stats()}
        assert int(row[1]) >= 3  # meta, lists, counters
        hits, misses = int(row[-3]), int(row[-2])
        assert hits >= 1 and stats["evictions"] == row[-4]  # the session's server: earlier tests read too
        assert row[-1] == f"{100.0 * hits / (hits + misses):.1f}%"
    assert lines[-1].startswith("testapp.Follow: indexes (pk), (follower), (follower, followee); shared counts off")


# ---------------------------------------------------------------- listy_schema
def schema_json(*labels: str) -> list[dict]:
    out = StringIO()
    call_command("listy_schema", *labels, "--json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["format"] == 1
    return document["engines"]


def test_listy_schema_json_is_what_the_engine_holds(users):
    [follow] = schema_json("testapp.Follow")
    schema = Follow.cache.schema
    assert follow["model"] == "testapp.Follow" and follow["engine_label"] == Follow.cache.engine_label
    assert follow["key_prefix"] == "t"
    assert [(f["name"], f["kind"], f["nullable"]) for f in follow["fields"]] == [
        (c.attname, c.kind, c.nullable) for c in schema.columns
    ]
    assert [f["name"] for f in follow["fields"]] == ["id", "created", "follower_id", "followee_id"]
    assert follow["schema_fingerprint"] == schema.fingerprint
    assert follow["indexes"] == [["id"], ["follower_id"], ["followee_id", "follower_id"]]
    assert follow["unique"] == [["id"]]
    assert (follow["timestamp_field"], follow["time_zone"], follow["counter_epoch"]) == ("created", "Europe/Paris", None)
    [friend] = schema_json("testapp.Friend")
    assert friend["unique"] == [["followee_id", "follower_id"], ["id"]]
    assert (friend["soft_delete_field"], friend["keeps_soft_deleted"]) == ("hidden", False)
    assert {e["model"] for e in schema_json()} >= {"testapp.Follow", "testapp.Friend", "testapp.Sample"}


def test_listy_schema_follows_the_settings(users):
    with override_settings(LISTY={"SERVERS": ["local"], "KEY_PREFIX": "other", "COUNTER_EPOCH": 90}):
        [follow] = schema_json("testapp.Follow")
    assert (follow["key_prefix"], follow["counter_epoch"]) == ("other", 90.0)
    with override_settings(USE_TZ=False):
        [follow] = schema_json("testapp.Follow")
    assert follow["time_zone"] is None


def test_listy_schema_text_and_usage(users):
    out = StringIO()
    call_command("listy_schema", "testapp.Friend", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("testapp.Friend: engine 'testapp.Friend', key prefix 't', schema fingerprint 0x")
    assert lines[1] == "  fields: id int, created datetime, follower_id int, followee_id int, hidden bool"
    assert lines[2] == "  indexes: (id), (follower_id), (followee_id, follower_id); unique: (followee_id, follower_id), (id)"
    assert lines[-1] == "  lists hold rows: not hidden"
    with pytest.raises(CommandError) as err:
        call_command("listy_schema", "auth.User")
    assert err.value.returncode == 2
    assert Friend.cache.engine_label == "testapp.Friend"


# ---------------------------------------------------------------- real exit codes
def test_exit_codes_of_manage_py(users, manage):
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(follower=me)
    code, out, err = manage("listy_check", "testapp.Follow")
    assert code == 0 and out.splitlines()[-1] == "all cached lists are coherent", (code, out, err)
    with listy.bypass(Follow):  # a write the cache does not follow
        Follow.objects.bulk_create([Follow(follower=me, followee=users[2])])
    code, out, err = manage("listy_check", "testapp.Follow")
    assert code == 1 and "incoherent cached lists" in err
    code, out, err = manage("listy_check", "--fix", "testapp.Follow")
    assert code == 0, err
    code, out, err = manage("listy_inspect", "testapp.Follow", f"follower={me.pk}")
    assert code == 0 and "state:    cached, 2 live records" in out
    code, out, err = manage("listy_inspect", "testapp.Follow", "followee=1")
    assert code == 2 and "no cached index matches" in err
    code, out, err = manage("listy_warm", "testapp.Follow", "--batch", "x")
    assert code == 2 and "invalid int value" in err
    code, out, err = manage("listy_stats", "--help")
    assert code == 0 and "hit ratio" in out
