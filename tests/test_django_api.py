"""SPEC §2 row by row, as a Django user would use it.

Foreign keys given as instance / id / ``<fk>_id`` in every call; the lazy
sequence and the instances it builds (real model instances, equal to the
ORM's, that save and delete); every ``CachingManager`` option; transactions
(on_commit, savepoints, rollbacks, ``ATOMIC_REQUESTS`` through the test
client); writes made outside Listy (save, delete, the admin, cascades); the
per-request registry through the test client; the error tree; clients with
different index sets.
"""

from __future__ import annotations

import collections.abc
import copy
import datetime
import gc
import pickle

import pytest
from django.contrib.auth.models import User
from django.core import serializers
from django.core.exceptions import FieldError
from django.db import connections, transaction
from django.forms.models import model_to_dict
from django.test import Client, override_settings
from django.test.utils import isolate_apps
from django.utils import timezone

import listy
from listy import recorder
from listy.store import get_store
from tests import api_urls
from tests.testapp.models import Bookmark, Comment, Entry, Follow

pytestmark = pytest.mark.django_db(transaction=True)

SPELLINGS = ["instance", "id", "attname"]


@pytest.fixture(autouse=True)
def _drop_extra_clients():
    """Clients a test made (listy.ListCache(...)) must not outlive it: the
    registry would keep fanning later tests' writes out to them."""
    yield
    gc.collect()


def fk(spelling: str, name: str, obj) -> dict:
    """``name=obj`` as the instance, its id, or ``name_id=id``."""
    if spelling == "instance":
        return {name: obj}
    if spelling == "id":
        return {name: obj.pk}
    return {f"{name}_id": obj.pk}


def followees(user) -> list[int]:
    return [f.followee_id for f in Follow.cache.get(follower=user)]


class Boom(Exception):
    pass


# ---------------------------------------------------------------- FK spellings
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_foreign_key_in_every_call(users, spelling, django_assert_num_queries):
    me, you, him = users[:3]

    def who(name, user):
        return fk(spelling, name, user)

    first = Follow.cache.add(**who("follower", me), **who("followee", you))
    assert isinstance(first, Follow) and first.pk is not None
    assert (first.follower_id, first.followee_id) == (me.pk, you.pk)
    assert Follow.objects.get(pk=first.pk).follower_id == me.pk
    second = Follow.cache.add(**who("follower", me), **who("followee", him))
    assert Follow.cache.add(**who("follower", me), **who("followee", you)) is None
    assert Follow.objects.count() == 2
    # counters are their own keys: the first count of a list reads the database
    Follow.cache.count(follower=me)
    Follow.cache.count(follower=me, followee=him)

    with django_assert_num_queries(0):
        assert [f.pk for f in Follow.cache.get(**who("follower", me))] == [second.pk, first.pk]
        assert Follow.cache.get(**who("followee", you), **who("follower", me))[0] == first
        assert Follow.cache.get_first(**who("follower", me)) == second
        assert Follow.cache.count(**who("follower", me)) == 2
        assert Follow.cache.count(**who("follower", me), **who("followee", him)) == 1
    assert Follow.cache.key(**who("follower", me)) == Follow.cache.key(follower=me)
    got = Follow.cache.get_multi(
        [who("follower", me), who("follower", you)],
        key_func=lambda f: getattr(next(iter(f.values())), "pk", next(iter(f.values()))),
    )
    assert {k: [f.pk for f in v] for k, v in got.items()} == {me.pk: [second.pk, first.pk], you.pk: []}
    assert [f.pk for f in Follow.cache.get_multi_list([who("follower", me)])] == [second.pk, first.pk]
    day = timezone.localdate(first.created)
    assert Follow.cache.daily_count(**who("follower", me), created=first.created) == 2
    assert Follow.cache.weekly_counts(**who("follower", me), created=[day]) == {
        day - datetime.timedelta(days=day.weekday()): 2
    }
    Follow.cache.rebuild(**who("follower", me))
    assert Follow.cache.delete(**who("follower", me), **who("followee", you)) is True
    assert Follow.cache.delete(**who("follower", me), **who("followee", you)) is False
    with django_assert_num_queries(0):
        assert followees(me) == [him.pk]
        assert not Follow.cache.get(**who("follower", me), **who("followee", you))
        assert Follow.cache.count(**who("follower", me)) == 1


def test_the_primary_key_by_any_name(users, django_assert_num_queries):
    me, you = users[:2]
    follow = Follow.cache.add(follower=me, followee=you)
    Follow.cache.get(pk=follow.pk)
    Follow.cache.count(pk=follow.pk)
    with django_assert_num_queries(0):
        assert Follow.cache.get(pk=follow.pk)[0] == follow
        assert Follow.cache.get(id=follow.pk)[0] == follow
        assert Follow.cache.get(pk=str(follow.pk))[0] == follow
        assert Follow.cache.get(id__exact=follow.pk)[0] == follow
        assert Follow.cache.get_one(str(follow.pk)) == follow
        assert Follow.cache.count(pk=follow.pk) == 1
    assert Follow.cache.delete(id=follow.pk) is True
    assert Follow.cache.get_one(follow.pk) is None


# ---------------------------------------------------------------- the lazy sequence
@pytest.fixture(params=["cache", "database"])
def client(request):
    """``Follow.cache``, or a client with the same indexes and disable_cache
    (every call served by the database): the same semantics."""
    if request.param == "cache":
        return Follow.cache
    return listy.ListCache(
        Follow, [("pk",), ("follower",), ("follower", "followee")], timestamp_field="created", disable_cache=True
    )


def test_sequence_semantics(users, client):
    me, *others = users
    added = [client.add(follower=me, followee=o) for o in others]  # 4 follows
    newest = [f.pk for f in reversed(added)]
    got = client.get(follower=me)
    assert isinstance(got, collections.abc.Sequence)
    assert len(got) == 4 and bool(got) is True
    assert [f.pk for f in got] == newest
    assert got[0].pk == newest[0] and got[3].pk == newest[3]
    assert got[-1].pk == newest[-1] and got[-4].pk == newest[0]
    for i in (4, -5, 10**6):
        with pytest.raises(IndexError):
            got[i]
    with pytest.raises(TypeError):
        got["0"]  # type: ignore[index]
    assert [f.pk for f in got[1:3]] == newest[1:3]
    assert [f.pk for f in got[:0]] == []
    assert [f.pk for f in got[2:]] == newest[2:]
    assert [f.pk for f in got[-2:]] == newest[-2:]
    assert [f.pk for f in got[3:1]] == []
    assert [f.pk for f in got[10:]] == []
    assert [f.pk for f in got[::-1]] == newest[::-1]
    assert [f.pk for f in got[::2]] == newest[::2]
    assert [f.pk for f in got[-1:0:-2]] == newest[-1:0:-2]
    assert [f.pk for f in reversed(got)] == newest[::-1]
    # Bounds past what an index holds clip as a list's do (no OverflowError).
    assert [f.pk for f in got[: 10**30]] == newest
    assert [f.pk for f in got[-(10**30) : 2]] == newest[:2]
    assert [f.pk for f in got[1 : 10**30 : 2]] == newest[1::2]
    with pytest.raises(ValueError):
        got[::0]
    assert got[1] in got
    assert list(got) == list(got)  # iterable more than once
    with pytest.raises(TypeError):
        got[0] = got[1]  # type: ignore[index]
    with pytest.raises((TypeError, AttributeError)):
        del got[0]  # type: ignore[attr-defined]
    empty = client.get(follower=others[0])
    assert len(empty) == 0 and bool(empty) is False and list(empty) == [] and empty[0:5] == []
    with pytest.raises(IndexError):
        empty[0]


def orm_fields(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields}


def test_instances_are_real_model_instances(users, client, django_assert_num_queries):
    me, you, him = users[:3]
    client.add(follower=me, followee=you)
    for obj in [
        client.get(follower=me)[0],
        client.get(follower=me)[0:1][0],
        next(iter(client.get(follower=me, followee=you))),
        client.get_one(Follow.objects.get(follower=me).pk),
        client.get_first(follower=me),
        client.get_multi_list([{"follower": me}])[0],
        next(iter(client.get_multi([{"follower": me}]).values()))[0],
    ]:
        orm = Follow.objects.filter(follower=me).get()
        assert type(obj) is Follow
        assert obj._state.adding is False
        assert obj._state.db == "default"
        assert obj == orm and hash(obj) == hash(orm)
        assert orm_fields(obj) == orm_fields(orm)
        assert obj.get_deferred_fields() == set()
        assert model_to_dict(obj) == model_to_dict(orm)
        assert serializers.serialize("json", [obj]) == serializers.serialize("json", [orm])
        assert pickle.loads(pickle.dumps(obj)) == orm
        assert orm_fields(copy.deepcopy(obj)) == orm_fields(orm)
        assert timezone.is_aware(obj.created)
        obj.full_clean()
        assert obj.follower == me and obj.followee == you  # FK access (User is not cached)

    # save() updates the row (no INSERT) and the lists follow it
    obj = client.get(follower=me)[0]
    pk = obj.pk
    obj.followee = him
    obj.save()
    assert Follow.objects.count() == 1
    assert Follow.objects.get(pk=pk).followee_id == him.pk
    assert [f.followee_id for f in client.get(follower=me)] == [him.pk]
    assert client.get(follower=me, followee=him) and not client.get(follower=me, followee=you)
    obj = client.get(follower=me)[0]
    obj.save(update_fields=["followee"])
    obj.refresh_from_db()
    assert obj.followee_id == him.pk
    # delete() of a built instance deletes the row and takes it out of the lists
    client.get(follower=me)[0].delete()
    assert not Follow.objects.exists()
    assert not client.get(follower=me) and client.get_one(pk) is None


def test_the_lazy_sequence_builds_only_what_is_read(users, django_assert_num_queries):
    """len()/bool()/[i] on a long cached list: no query, and one instance
    per access (instances are built on access, not kept)."""
    me = users[0]
    many = [User(username=f"many{i}") for i in range(300)]
    User.objects.bulk_create(many)
    ids = list(User.objects.filter(username__startswith="many").values_list("pk", flat=True))
    Follow.objects.bulk_create([Follow(follower=me, followee_id=i) for i in ids])
    Follow.cache.rebuild(follower=me)
    with django_assert_num_queries(0):
        got = Follow.cache.get(follower=me)
        assert len(got) == 300 and got
        assert got[150].followee_id in ids
        assert len(got[10:20]) == 10
        assert got.pks()[:3] == sorted(got.pks(), reverse=True)[:3]


# ---------------------------------------------------------------- inlined foreign-key fields
@pytest.mark.parametrize("disabled", [False, True], ids=["cache", "database"])
def test_inlined_instances_query_only_for_deferred_fields(users, disabled, django_assert_num_queries):
    me, you = users[:2]
    entry = Entry.cache.add(author=me, title="Hello", body="long")
    Entry.cache.flush_all()  # so that obj.entry cannot come from Entry's pk list
    reader = listy.ListCache(
        Comment, [("user",)], inlined_foreign_key_fields={"entry": ["created", "title"]}, disable_cache=disabled
    )
    Comment.cache.add(entry=entry, user=you, text="x")
    reader.get(user=you)
    with django_assert_num_queries(1 if disabled else 0):
        (comment,) = reader.get(user=you)
        rel = comment.entry
        assert (rel.pk, rel.title, rel.created) == (entry.pk, "Hello", entry.created)
        assert rel._state.adding is False and rel._state.db == "default"
        assert rel.get_deferred_fields() == {"author_id", "body"}
    with django_assert_num_queries(1):
        assert rel.body == "long"
    with django_assert_num_queries(1):
        assert rel.author_id == me.pk
    assert comment.entry is rel


# ---------------------------------------------------------------- options
def test_disable_cache_goes_to_the_database_and_stores_nothing(users, django_assert_num_queries):
    me, you = users[:2]
    direct = listy.ListCache(Follow, [("follower",)], timestamp_field="created", disable_cache=True)
    follow = direct.add(follower=me, followee=you)
    key = Follow.cache.key(follower=me)
    with django_assert_num_queries(1):
        assert [f.pk for f in direct.get(follower=me)] == [follow.pk]
    with django_assert_num_queries(1):
        assert direct.count(follower=me) == 1
    with django_assert_num_queries(1):
        assert direct.daily_count(follower=me, created=follow.created) == 1
    assert direct.hits == 0
    # the write of a disabled client still reaches the other clients' lists
    assert followees(me) == [you.pk]
    Follow.cache.get(follower=me)
    assert get_store().get_raw(key) is not None
    assert direct.delete(follower=me) is True
    with django_assert_num_queries(0):
        assert followees(me) == []


def test_add_through_a_disabled_client_updates_cached_lists(users, django_assert_num_queries):
    me, you, him = users[:3]
    direct = listy.ListCache(Follow, [("follower",)], disable_cache=True)
    Follow.cache.add(follower=me, followee=you)
    assert followees(me) == [you.pk]
    assert Follow.cache.count(follower=me) == 1
    direct.add(follower=me, followee=him)
    with django_assert_num_queries(0):
        assert followees(me) == [him.pk, you.pk]
        assert Follow.cache.count(follower=me) == 2


@pytest.fixture
def second_memcached():
    from tests.conftest import Memcached

    server = Memcached().start()
    yield server
    server.stop()


def test_address_puts_a_model_on_its_own_server(users, second_memcached, django_assert_num_queries):
    me, you, him = users[:3]
    own = listy.ListCache(Follow, [("follower",)], address=lambda: second_memcached.address)
    there = listy._native.Store.memcached([second_memcached.address])
    Follow.cache.add(follower=me, followee=you)
    assert [f.followee_id for f in own.get(follower=me)] == [you.pk]
    key = own.key(follower=me)
    assert there.get_raw(key) is not None
    # writes through either client reach both servers
    Follow.cache.add(follower=me, followee=him)
    own.delete(follower=me, followee=you)
    with django_assert_num_queries(0):
        assert [f.followee_id for f in own.get(follower=me)] == [him.pk]
        assert followees(me) == [him.pk]
    # host without a port means 11211: the address is normalised
    assert listy.ListCache(Follow, [("follower",)], address=lambda: "127.0.0.1").address() == "127.0.0.1"


def test_deleted_timestamp_is_now_in_utc(users):
    me = users[0]
    mark = Bookmark.cache.add(user=me, url="https://a")
    before = timezone.now()
    Bookmark.cache.delete(pk=mark.pk)
    mark.refresh_from_db()
    assert mark.deleted is True
    assert before <= mark.deleted_at <= timezone.now()
    assert mark.deleted_at.utcoffset() == datetime.timedelta(0)


# ---------------------------------------------------------------- transactions
def test_nothing_reaches_the_cache_before_commit(users, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    follow = Follow.cache.get(follower=me)[0]
    key = Follow.cache.key(follower=me)
    before = get_store().get_raw(key)
    with transaction.atomic():
        Follow.cache.add(follower=me, followee=him)
        Follow.cache.delete(follower=me, followee=you)
        Follow.objects.create(follower=him, followee=me)
        assert get_store().get_raw(key) == before
        assert followees(me) == [him.pk]  # the transaction reads its writes
        assert get_store().get_raw(key) == before
    with django_assert_num_queries(0):
        assert followees(me) == [him.pk]
        assert followees(him) == [me.pk]


def test_reads_inside_a_rolled_back_transaction_store_nothing(users, django_assert_num_queries):
    """A list read for the first time inside a transaction that writes is
    not stored: after the rollback the cache does not hold the rolled-back
    row (cold lists, and lists touched by save() outside Listy)."""
    me, you, him = users[:3]
    with pytest.raises(Boom), transaction.atomic():
        Follow.cache.add(follower=me, followee=you)
        assert followees(me) == [you.pk]
        Follow.objects.create(follower=him, followee=you)
        assert followees(him) == [you.pk]
        assert Follow.cache.count(follower=him) == 1
        assert Follow.cache.count() == 2
        raise Boom
    assert followees(me) == [] and followees(him) == []
    assert Follow.cache.count() == 0
    with django_assert_num_queries(0):
        assert followees(me) == [] and followees(him) == []


def test_savepoints(users, django_assert_num_queries):
    me, you, him, her = users[:4]
    with transaction.atomic():
        Follow.cache.add(follower=me, followee=you)
        with transaction.atomic():  # released savepoint: kept
            Follow.cache.add(follower=me, followee=him)
        with pytest.raises(Boom), transaction.atomic():  # rolled back
            Follow.cache.add(follower=me, followee=her)
            Follow.cache.delete(follower=me, followee=you)
            raise Boom
    with django_assert_num_queries(0):
        assert followees(me) == [him.pk, you.pk]
    # an outer rollback takes back the released savepoints too
    with pytest.raises(Boom), transaction.atomic():
        with transaction.atomic():
            Follow.cache.add(follower=me, followee=her)
        raise Boom
    with django_assert_num_queries(0):
        assert followees(me) == [him.pk, you.pk]
    assert not Follow.objects.filter(followee=her).exists()


def test_on_commit_order_with_the_callers_own_callbacks(users):
    """The caller's on_commit callbacks that run after Listy's see the cache
    already updated."""
    me, you = users[:2]
    Follow.cache.get(follower=me)
    seen = []
    with transaction.atomic():
        Follow.cache.add(follower=me, followee=you)
        transaction.on_commit(lambda: seen.append(followees(me)))
    assert seen == [[you.pk]]


@pytest.fixture
def atomic_requests():
    settings = connections["default"].settings_dict
    old = settings.get("ATOMIC_REQUESTS", False)
    settings["ATOMIC_REQUESTS"] = True
    yield
    settings["ATOMIC_REQUESTS"] = old


@override_settings(ROOT_URLCONF="tests.api_urls", MIDDLEWARE=["listy.middleware.RequestContextCacheMiddleware"])
def test_atomic_requests_through_the_test_client(users, atomic_requests, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    assert followees(me) == [you.pk]
    key = Follow.cache.key(follower=me)
    before = get_store().get_raw(key)

    def failing(request):
        assert connections["default"].in_atomic_block
        Follow.cache.add(follower=me, followee=him)
        Follow.objects.filter(follower=me, followee=you).get().delete()
        assert followees(me) == [him.pk]
        raise Boom

    api_urls.CALLBACK[:] = [failing]
    response = Client(raise_request_exception=False).get("/run/")
    assert response.status_code == 500
    assert get_store().get_raw(key) == before
    with django_assert_num_queries(0):
        assert followees(me) == [you.pk]
    assert list(Follow.objects.values_list("followee_id", flat=True)) == [you.pk]

    def working(request):
        Follow.cache.add(follower=me, followee=him)
        return ",".join(map(str, followees(me)))

    api_urls.CALLBACK[:] = [working]
    response = Client().get("/run/")
    assert response.status_code == 200
    assert response.content.decode() == f"{him.pk},{you.pk}"
    with django_assert_num_queries(0):
        assert followees(me) == [him.pk, you.pk]


# ---------------------------------------------------------------- writes outside Listy
def test_save_moves_the_row_between_every_kind_of_list(users, django_assert_num_queries):
    me, you, him = users[:3]
    mark = Bookmark.objects.create(user=me, url="https://a", created=timezone.now() - datetime.timedelta(days=40))
    Bookmark.objects.create(user=you, url="https://b")
    assert [b.url for b in Bookmark.cache.get(user=me)] == ["https://a"]
    assert Bookmark.cache.count(user=you) == 1
    assert Bookmark.cache.count(user=me) == 1
    old_day = mark.created
    new_day = timezone.now()
    assert Bookmark.cache.daily_count(user=me, created=old_day) == 1
    assert Bookmark.cache.daily_count(user=you, created=new_day) == 1
    assert Bookmark.cache.get_one(mark.pk).user_id == me.pk
    mark.user = you
    mark.created = new_day
    mark.save()
    with django_assert_num_queries(0):
        assert not Bookmark.cache.get(user=me)
        assert sorted(b.url for b in Bookmark.cache.get(user=you)) == ["https://a", "https://b"]
        assert Bookmark.cache.count(user=me) == 0
        assert Bookmark.cache.count(user=you) == 2
        assert Bookmark.cache.daily_count(user=me, created=old_day) == 0
        assert Bookmark.cache.daily_count(user=you, created=mark.created) == 2
        assert Bookmark.cache.get_one(mark.pk).user_id == you.pk
    # save() of an instance that was built by the cache
    cached = Bookmark.cache.get_one(mark.pk)
    assert not Bookmark.cache.get(user=him)  # (an update does not build lists nobody read)
    cached.user_id = him.pk
    cached.save()
    with django_assert_num_queries(0):
        assert [b.url for b in Bookmark.cache.get(user=him)] == ["https://a"]
        assert [b.url for b in Bookmark.cache.get(user=you)] == ["https://b"]


def test_deleting_a_user_cascades_through_every_cached_model(users, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.add(follower=you, followee=me)
    Follow.cache.add(follower=you, followee=him)
    Bookmark.cache.add(user=me, url="https://a")
    Bookmark.cache.add(user=you, url="https://b")
    entry = Entry.cache.add(author=me, title="mine")
    Comment.cache.add(entry=entry, user=you, text="on mine")
    theirs = Entry.cache.add(author=you, title="theirs")
    Comment.cache.add(entry=theirs, user=me, text="by me")
    Comment.cache.add(entry=theirs, user=you, text="by you")
    # warm every list that the cascade touches
    for u in (me, you):
        Follow.cache.get(follower=u)
        Bookmark.cache.get(user=u)
        Entry.cache.get(author=u)
        Comment.cache.get(user=u)
    Comment.cache.get(entry=entry)
    Comment.cache.get(entry=theirs)
    Entry.cache.get_one(entry.pk)
    assert Follow.cache.count() == 3 and Comment.cache.count() == 3
    assert Bookmark.cache.count() == 2
    me_pk = me.pk
    me.delete()
    me = User(pk=me_pk)  # delete() set the instance's pk to None
    with django_assert_num_queries(0):
        assert followees(you) == [him.pk]
        assert followees(me) == []
        assert not Bookmark.cache.get(user=me)
        assert [b.url for b in Bookmark.cache.get(user=you)] == ["https://b"]
        assert not Entry.cache.get(author=me)
        assert Entry.cache.get_one(entry.pk) is None
        assert not Comment.cache.get(entry=entry)
        assert [c.text for c in Comment.cache.get(entry=theirs)] == ["by you"]
        assert [c.text for c in Comment.cache.get(user=you)] == ["by you"]
        assert not Comment.cache.get(user=me)
        assert Follow.cache.count() == 1
        assert Comment.cache.count() == 1
        assert Bookmark.cache.count() == 1
    assert all(r.coherent is not False for r in Follow.cache.determine_coherency(check_against_db=True))
    assert all(r.coherent is not False for r in Comment.cache.determine_coherency(check_against_db=True))


ADMIN_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "listy.middleware.RequestContextCacheMiddleware",
]


@pytest.fixture
def admin_client_(users):
    boss = User.objects.create_superuser("boss", "boss@example.com", "pw")
    c = Client()
    c.force_login(boss)
    return c


@override_settings(ROOT_URLCONF="tests.api_urls", MIDDLEWARE=ADMIN_MIDDLEWARE)
def test_the_admin_keeps_the_lists_right(users, admin_client_, django_assert_num_queries):
    me, you, him = users[:3]
    c = admin_client_
    Follow.cache.add(follower=me, followee=you)
    Follow.cache.add(follower=me, followee=him)
    assert len(followees(me)) == 2
    base = "/admin/testapp/follow/"
    assert c.get(base).status_code == 200
    # add
    response = c.post(f"{base}add/", {"follower": you.pk, "followee": me.pk})
    assert response.status_code == 302, response.content[:2000]
    with django_assert_num_queries(0):
        assert followees(you) == [me.pk]
    # change: the row moves from me's list to him's
    follow = Follow.objects.get(follower=me, followee=you)
    assert followees(him) == []
    response = c.get(f"{base}{follow.pk}/change/")
    assert response.status_code == 200
    response = c.post(f"{base}{follow.pk}/change/", {"follower": him.pk, "followee": you.pk})
    assert response.status_code == 302, response.content[:2000]
    with django_assert_num_queries(0):
        assert followees(me) == [him.pk]
        assert followees(him) == [you.pk]
    # delete view
    response = c.post(f"{base}{follow.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    with django_assert_num_queries(0):
        assert followees(him) == []
        assert Follow.cache.get_one(follow.pk) is None
    # the changelist's bulk delete action
    pks = list(Follow.objects.values_list("pk", flat=True))
    assert Follow.cache.count() == len(pks)
    response = c.post(base, {"action": "delete_selected", "_selected_action": pks, "post": "yes"})
    assert response.status_code == 302
    assert not Follow.objects.exists()
    with django_assert_num_queries(0):
        assert followees(me) == [] and followees(you) == []
        assert Follow.cache.count() == 0


@override_settings(ROOT_URLCONF="tests.api_urls", MIDDLEWARE=ADMIN_MIDDLEWARE)
def test_the_admin_soft_delete_flags(users, admin_client_, django_assert_num_queries):
    me = users[0]
    mark = Bookmark.cache.add(user=me, url="https://a")
    assert [b.url for b in Bookmark.cache.get(user=me)] == ["https://a"]
    data = {
        "user": me.pk,
        "url": "https://a",
        "created_0": timezone.localtime(mark.created).strftime("%Y-%m-%d"),
        "created_1": timezone.localtime(mark.created).strftime("%H:%M:%S"),
        "deleted": "on",
        "enabled": "on",
    }
    response = admin_client_.post(f"/admin/testapp/bookmark/{mark.pk}/change/", data)
    assert response.status_code == 302, response.content[:3000]
    with django_assert_num_queries(0):
        assert not Bookmark.cache.get(user=me)


# ---------------------------------------------------------------- the per-request registry
REGISTRY = ["listy.middleware.RequestContextCacheMiddleware"]


@override_settings(ROOT_URLCONF="tests.api_urls", MIDDLEWARE=REGISTRY)
def test_registry_through_the_test_client(users, django_assert_num_queries):
    me, you = users[:2]
    follow = Follow.cache.add(follower=me, followee=you)
    entry = Entry.cache.add(author=me, title="t")
    comment = Comment.objects.create(entry=entry, user=you, text="x")
    plain = Comment.objects.filter(pk=comment.pk).values_list("pk", flat=True)[0]
    assert plain == comment.pk
    # warm the lists the request reads
    Follow.cache.get_one(follow.pk)
    Entry.cache.get_one(entry.pk)

    def view(request):
        loaded = Comment.objects.select_related(None).get(text="x")  # one query: Comment has no pk index
        with django_assert_num_queries(0):
            a = Follow.objects.get(pk=follow.pk)
            b = Follow.objects.filter(pk=follow.pk)[0]
            c = Follow.objects.filter(pk=follow.pk).get()
            d = Follow.objects.filter(pk=follow.pk).first()
            e = list(Follow.objects.filter(pk=follow.pk))[0]
            f = Follow.cache.get(follower=me)[0]
            g = Follow.objects.get(id=follow.pk)
            assert a is b is c is d is e is f is g
            e1 = loaded.entry  # FK access to a cached model
            e2 = Entry.objects.get(pk=entry.pk)
            e3 = Entry.objects.filter(pk=entry.pk).get()
            assert e1 is e2 is e3
            assert e1.title == "t"
        return "ok"

    api_urls.CALLBACK[:] = [view]
    response = Client().get("/run/")
    assert response.status_code == 200 and response.content == b"ok"


def test_pk_filters_outside_requests(users, django_assert_num_queries):
    me, you = users[:2]
    follow = Follow.cache.add(follower=me, followee=you)
    Follow.cache.get_one(follow.pk)
    with django_assert_num_queries(0):
        assert Follow.objects.get(pk=follow.pk) == follow
        assert list(Follow.objects.filter(pk=follow.pk)) == [follow]
        assert Follow.objects.filter(pk=follow.pk).get() == follow
        assert Follow.objects.all().filter(id=follow.pk).first() == follow
        assert Follow.objects.filter(pk=follow.pk)[0] == follow
    # anything more than a pk filter is the ORM's
    with django_assert_num_queries(1):
        assert list(Follow.objects.filter(pk=follow.pk, follower=me)) == [follow]
    with django_assert_num_queries(1):
        assert list(Follow.objects.filter(pk=follow.pk).values_list("followee_id", flat=True)) == [you.pk]
    with django_assert_num_queries(1):
        assert Follow.objects.filter(pk=follow.pk).only("pk")[0].get_deferred_fields() == {
            "created",
            "follower_id",
            "followee_id",
        }
    with django_assert_num_queries(1):
        assert Follow.objects.filter(pk=follow.pk).select_related("follower")[0].follower == me
    with django_assert_num_queries(1):
        assert list(Follow.objects.exclude(pk=follow.pk)) == []
    with django_assert_num_queries(1):
        assert list(me.follows.filter(pk=follow.pk)) == [follow]
    with django_assert_num_queries(1):
        assert list(Follow.objects.filter(pk=follow.pk)[1:]) == []
    # a row the cache does not list is looked up in the database too
    assert list(Follow.objects.filter(pk=10**9)) == []
    with django_assert_num_queries(1):
        assert list(Follow.objects.filter(pk=10**9)) == []
    with transaction.atomic():
        with django_assert_num_queries(1):
            assert Follow.objects.select_for_update().get(pk=follow.pk) == follow
    # rows the lists leave out still come from the database
    mark = Bookmark.cache.add(user=me, url="https://a")
    Bookmark.cache.delete(pk=mark.pk)
    assert Bookmark.objects.filter(pk=mark.pk).get().deleted is True
    assert Bookmark.objects.get(pk=mark.pk).deleted is True


# ---------------------------------------------------------------- errors
def test_every_listy_error_is_a_listy_error(users):
    me = users[0]
    for name in listy.exceptions.__all__:
        assert issubclass(getattr(listy, name), listy.ListyError), name
    bad = [
        lambda: Follow.cache.get(nope=1),
        lambda: Follow.cache.get(followee=me),
        lambda: Follow.cache.count(created=timezone.now()),
        lambda: Comment.cache.get_one(1),  # no ("pk",) index
        lambda: listy.ListCache(Follow, [("nope",)]).get(nope=1),
        lambda: listy.ListCache(Follow, [("follower",)]).daily_count(follower=me, created=timezone.now()),
    ]
    for call in bad:
        with pytest.raises(listy.ListyError):
            call()
    with override_settings(LISTY={"NOPE": 1}), pytest.raises(listy.ListyError):
        Follow.cache.get(follower=me)
    # Django's own errors stay Django's
    with pytest.raises(FieldError):
        Follow.cache.delete(nope=1)
    with pytest.raises((TypeError, FieldError)):
        Follow.cache.add(follower=me, nope=1)


def test_a_corrupt_list_is_never_served(users, django_assert_num_queries):
    """Bytes that do not decode as a list are a miss: the list is read from
    the database, served right, and stored again whole (guarantees §9)."""
    me, you = users[:2]
    Follow.cache.add(follower=me, followee=you)
    key = Follow.cache.key(follower=me)
    Follow.cache.get(follower=me)
    garbage = b"\xff\xfe garbage that is no list"
    get_store().set_raw(key, garbage)
    with recorder.recording() as rec:
        got = Follow.cache.get(follower=me)
        assert [f.followee_id for f in got] == [you.pk] and not got.from_cache
        with django_assert_num_queries(0):
            again = Follow.cache.get(follower=me)  # the rebuilt list
            assert [f.followee_id for f in again] == [you.pk] and again.from_cache
    assert [(c.hits, c.misses) for c in rec.calls] == [(0, 1), (1, 0)]
    assert get_store().get_raw(key) != garbage


# ---------------------------------------------------------------- clients with different index sets
def test_clients_with_different_indexes_keep_each_others_lists(users, django_assert_num_queries):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    by_followee = listy.ListCache(Follow, [("followee",), ("followee", "follower")], timestamp_field="created")
    assert [f.follower_id for f in by_followee.get(followee=you)] == [me.pk]
    assert by_followee.count(followee=you) == 1
    day = timezone.now()
    assert by_followee.daily_count(followee=you, created=day) == 1
    # writes through the other client, save(), delete(), a cascade
    Follow.cache.add(follower=him, followee=you)
    later = Follow.objects.create(follower=you, followee=him)
    with django_assert_num_queries(0):
        assert [f.follower_id for f in by_followee.get(followee=you)] == [him.pk, me.pk]
        assert [f.follower_id for f in by_followee.get(followee=him)] == [you.pk]
        assert by_followee.count(followee=you) == 2
        assert by_followee.daily_count(followee=you, created=day) == 2
    by_followee.get(followee=me)
    later.followee = me
    later.save()
    with django_assert_num_queries(0):
        assert not by_followee.get(followee=him)
        assert [f.follower_id for f in by_followee.get(followee=me)] == [you.pk]
    assert Follow.cache.count(follower=you) == 1
    by_followee.add(follower=you, followee=him)
    by_followee.delete(follower=me, followee=you)
    with django_assert_num_queries(0):
        assert followees(you) == [him.pk, me.pk]
        assert followees(me) == []
        assert Follow.cache.count(follower=you) == 2
    him_pk = him.pk
    him.delete()
    him = User(pk=him_pk)
    with django_assert_num_queries(0):
        assert not by_followee.get(followee=you)
        assert not by_followee.get(followee=him)
        assert followees(you) == [me.pk]
    # a third client with another record schema (no inlined fields)
    entry = Entry.cache.add(author=me, title="t")
    plain = listy.ListCache(Comment, [("entry", "user")])
    Comment.cache.add(entry=entry, user=you, text="a")
    assert [c.text for c in plain.get(entry=entry, user=you)] == ["a"]
    plain.add(entry=entry, user=you, text="b")
    # (a write through a client of another record schema may drop the
    # lists of this one rather than update them: they are rebuilt right)
    assert [c.text for c in Comment.cache.get(entry=entry)] == ["b", "a"]
    assert [c.entry.title for c in Comment.cache.get(user=you)] == ["t", "t"]
    with django_assert_num_queries(0):
        assert [c.text for c in Comment.cache.get(entry=entry)] == ["b", "a"]
        assert [c.text for c in plain.get(entry=entry, user=you)] == ["b", "a"]


def test_a_client_on_a_model_without_a_caching_manager(users, django_assert_num_queries):
    """listy.ListCache(Model, ...) on Django's own User: reads, counts, and
    the signals keep it right."""
    staff = listy.ListCache(User, [("pk",), ("is_staff",)], timestamp_field="date_joined")
    assert not hasattr(User, "cache")
    assert [u.pk for u in staff.get(is_staff=False)] == [u.pk for u in reversed(users)]
    assert staff.count(is_staff=False) == 5
    boss = User.objects.create(username="boss", is_staff=True)
    users[0].is_staff = True
    users[0].save()
    users[1].delete()
    with django_assert_num_queries(0):
        # (loose order: a row an update moved into a list is prepended)
        assert sorted(u.username for u in staff.get(is_staff=True)) == ["boss", "user0"]
        assert [u.username for u in staff.get(is_staff=False)] == ["user4", "user3", "user2"]
        assert staff.count(is_staff=False) == 3
        assert staff.get_one(boss.pk) == boss
    assert staff.daily_count(is_staff=True, date_joined=boss.date_joined) == 2
    assert staff.add(username="new", is_staff=True).pk is not None
    assert staff.delete(username="new") is True
    assert sorted(u.username for u in staff.get(is_staff=True)) == ["boss", "user0"]


# ---------------------------------------------------------------- writes that send no signal
def test_the_documented_repairs(users, django_assert_num_queries):
    """docs/guarantees.md: writes Listy does not follow (here made with
    ``listy.bypass``, as another program's would be) are repaired by
    rebuild(**filters) for the lists the filters name, flush_all() for
    everything of the model, counters included."""
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    day = timezone.now()
    assert followees(me) == [you.pk]
    assert Follow.cache.count(follower=me) == 1
    assert Follow.cache.daily_count(follower=me, created=day) == 1
    assert Follow.cache.count() == 1
    # bulk_create: the lists do not see the new rows ...
    with listy.bypass(Follow):
        Follow.objects.bulk_create([Follow(follower=me, followee=him), Follow(follower=you, followee=him)])
    assert followees(me) == [you.pk]
    # ... until the lists of the rows' values are rebuilt
    Follow.cache.rebuild(follower=me)
    Follow.cache.rebuild(follower=you)
    assert followees(me) == [him.pk, you.pk]
    assert followees(you) == [him.pk]
    assert Follow.cache.get(follower=me, followee=him)  # wider indexes too
    # QuerySet.update()
    with listy.bypass(Follow):
        Follow.objects.filter(follower=you).update(follower=him)
    Follow.cache.rebuild(follower=you)
    Follow.cache.rebuild(follower=him)
    assert followees(you) == [] and followees(him) == [him.pk]
    # raw SQL
    with listy.bypass(Follow), connections["default"].cursor() as cursor:
        cursor.execute(f"DELETE FROM {Follow._meta.db_table} WHERE follower_id = %s", [me.pk])
    Follow.cache.rebuild(follower=me)
    assert followees(me) == []
    assert not Follow.cache.get(follower=me, followee=him)
    # counters: flush_all() (a new generation) repairs them all
    Follow.cache.flush_all()
    assert Follow.cache.count() == 1
    assert Follow.cache.count(follower=me) == 0 and Follow.cache.count(follower=him) == 1
    assert Follow.cache.daily_count(follower=me, created=day) == 0
    assert Follow.cache.daily_count(follower=him, created=day) == 1
    assert followees(me) == [] and followees(him) == [him.pk]
    with django_assert_num_queries(0):
        assert followees(me) == [] and followees(him) == [him.pk]
        assert Follow.cache.count(follower=him) == 1
    assert all(r.coherent is not False for r in Follow.cache.determine_coherency(check_against_db=True))


def test_rebuild_repairs_the_counts_of_the_lists_it_names(users):
    me, you, him = users[:3]
    Follow.cache.add(follower=me, followee=you)
    day = timezone.now()
    assert Follow.cache.count(follower=me) == 1
    assert Follow.cache.daily_count(follower=me, created=day) == 1
    with listy.bypass(Follow):
        Follow.objects.bulk_create([Follow(follower=me, followee=him)])
    Follow.cache.rebuild(follower=me)
    assert Follow.cache.count(follower=me) == 2
    assert Follow.cache.daily_count(follower=me, created=day) == 2


@isolate_apps("tests.testapp")
def test_a_caching_manager_from_a_custom_queryset():
    from django.db import models

    from listy.manager import ListyQuerySet

    class MineQuerySet(models.QuerySet):
        def mine(self):
            return self.filter(pk__gt=0)

    class Thing(models.Model):
        objects = listy.CachingManager.from_queryset(MineQuerySet)([("pk",)])

        class Meta:
            app_label = "testapp"

    qs = Thing.objects.all()
    assert isinstance(qs, MineQuerySet) and isinstance(qs, ListyQuerySet)
    assert isinstance(Thing.objects.mine(), ListyQuerySet)
    assert isinstance(Thing.cache, listy.ListCache)


def test_instances_do_not_share_their_dicts_or_state() -> None:
    """Instances are copies of one template ``__dict__``: each has its own
    dict and its own ``ModelState``, with the keys ``from_db`` gives, and a
    change to one leaves the others (and later reads) as they were."""
    me = User.objects.create(username="me")
    others = User.objects.bulk_create([User(username=f"o{i}") for i in range(3)])
    Follow.objects.bulk_create([Follow(follower=me, followee=o) for o in others])
    a, b, c = Follow.cache.get(follower=me)
    orm = Follow.objects.get(pk=a.pk)
    assert list(a.__dict__) == list(orm.__dict__)
    assert vars(a._state) == vars(orm._state)
    assert a.__dict__ is not b.__dict__ and a._state is not b._state
    a.followee_id = me.pk
    a._state.adding = True
    a._state.fields_cache["followee"] = me
    assert b.followee_id == others[1].pk and c.followee_id == others[0].pk
    assert b._state.adding is False and "followee" not in b._state.fields_cache
    again = Follow.cache.get(follower=me)[0]
    assert again.followee_id == others[2].pk and again._state.adding is False
    assert again._state.fields_cache == {}
    names = [f.attname for f in Follow._meta.concrete_fields]
    rows = Follow.objects.filter(follower=me).order_by("-pk").values_list(*names)
    assert Follow.cache.get(follower=me).values() == list(rows)


def test_filter_values_are_coerced_alike_on_every_call(users):
    """``_index_for`` keeps what it learnt of a call's filter names: the
    values are still checked and coerced as the ORM would, on every call."""
    me, you, *_ = users
    Follow.cache.add(follower=me, followee=you)
    want = [f.pk for f in Follow.objects.filter(follower=me).order_by("-pk")]
    for _ in range(2):  # the second call takes what the first one learnt
        assert [f.pk for f in Follow.cache.get(follower=me.pk)] == want
        assert [f.pk for f in Follow.cache.get(follower_id=me.pk)] == want
        assert [f.pk for f in Follow.cache.get(follower=me)] == want
        assert [f.pk for f in Follow.cache.get(follower_id=str(me.pk))] == want
        assert [f.pk for f in Follow.cache.get(follower__exact=me.pk)] == want
        assert [f.pk for f in Follow.cache.get(followee=you.pk, follower=me.pk)] == want
        with pytest.raises(ValueError):
            Follow.cache.get(follower_id="not a number")
        with pytest.raises(listy.NotCachableException):
            Follow.cache.get(follower=me.pk, follower_id=me.pk)
        with pytest.raises(listy.NotCachableException):
            Follow.cache.get(followee=you.pk)
