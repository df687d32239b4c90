"""``manage.py demo``: Listy on the Follow model, step by step, then a
cached read of a list timed next to the equivalent ORM query."""

from __future__ import annotations

import statistics
import time
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection, reset_queries
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from listy.conf import listy_settings
from social.models import Follow


def queries(n: int) -> str:
    return f"{n} {'query' if n == 1 else 'queries'}"


class Command(BaseCommand):
    help = "Shows Listy at work on the Follow model."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--size", type=int, default=1000, help="follows in the timed list")
        parser.add_argument("--repeat", type=int, default=50, help="timed reads (median reported)")

    def say(self, text: str = "") -> None:
        self.stdout.write(text)

    def handle(self, *args: Any, size: int, repeat: int, **options: Any) -> None:
        conf = listy_settings()
        store = "embedded in-process store" if conf.is_local else "memcached " + ", ".join(conf.servers)
        self.say(f"Listy demo — store: {store}")
        Follow.objects.all().delete()
        Follow.cache.flush_all()
        User.objects.filter(username__startswith="demo-").delete()

        me, you, ann, bob = (User.objects.create(username=f"demo-{n}") for n in ("me", "you", "ann", "bob"))
        self.say("\n1. me follows you, ann and bob (Follow.cache.add)")
        for other in (you, ann, bob):
            Follow.cache.add(follower=me, followee=other)
        self.show("Follow.cache.get(follower=me)", me)

        self.say("\n2. do I follow you? (Follow.cache.get(follower=me, followee=you))")
        with CaptureQueriesContext(connection) as q:
            answer = bool(Follow.cache.get(follower=me, followee=you))
        self.say(f"   {answer}  ({queries(len(q))})")
        self.say(f"   adding it again returns {Follow.cache.add(follower=me, followee=you)!r} (no-op)")

        self.say("\n3. me unfollows ann (Follow.cache.delete)")
        Follow.cache.delete(follower=me, followee=ann)
        self.show("Follow.cache.get(follower=me)", me)
        with CaptureQueriesContext(connection) as q:
            follows_ann = bool(Follow.cache.get(follower=me, followee=ann))
        self.say(f"   do I follow ann? {follows_ann}  ({queries(len(q))})")

        self.say("\n4. counts")
        with CaptureQueriesContext(connection) as q:
            mine = Follow.cache.count(follower=me)
            everyone = Follow.cache.count()
        self.say(f"   Follow.cache.count(follower=me) = {mine}; Follow.cache.count() = {everyone}  ({queries(len(q))})")
        with CaptureQueriesContext(connection) as q:
            Follow.cache.count(follower=me)
            Follow.cache.count()
        self.say(f"   the same counts again: {queries(len(q))}")

        today = timezone.now()
        self.say(f"   Follow.cache.daily_count(follower=me, created=now) = {Follow.cache.daily_count(follower=me, created=today)}")

        self.timing(me, size, repeat)

    def show(self, label: str, user: User) -> None:
        with CaptureQueriesContext(connection) as q:
            names = [f.followee_id for f in Follow.cache.get(follower=user)]
        with CaptureQueriesContext(connection) as again:
            Follow.cache.get(follower=user)
        usernames = dict(User.objects.filter(pk__in=names).values_list("pk", "username"))
        self.say(
            f"   {label} -> {[usernames[n] for n in names]} "
            f"(newest first; {queries(len(q))}, then {queries(len(again))} on the next read)"
        )

    def timing(self, me: User, size: int, repeat: int) -> None:
        self.say(f"\n5. reading a list of {size} follows as model instances (median of {repeat})")
        star = User.objects.create(username="demo-star")
        fans = User.objects.bulk_create(User(username=f"demo-fan-{i}") for i in range(size))
        Follow.objects.bulk_create(Follow(follower=star, followee=f) for f in fans)
        Follow.cache.rebuild(follower=star)  # bulk_create sends no signals

        def orm() -> int:
            return len(list(Follow.objects.filter(follower=star).order_by("-pk")))

        def cached() -> int:
            return len(list(Follow.cache.get(follower=star)))

        assert orm() == cached() == size
        results = {}
        for name, fn in (("ORM query", orm), ("Listy cache", cached)):
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            results[name] = statistics.median(times)
        reset_queries()
        size_bytes = Follow.cache.get(follower=star).size
        for name, t in results.items():
            self.say(f"   {name:12s} {t * 1000:8.2f} ms")
        self.say(f"   speed-up: {results['ORM query'] / results['Listy cache']:.1f}x; "
                 f"{size_bytes} bytes cached, {size_bytes / size:.1f} bytes per follow")
