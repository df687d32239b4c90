"""Every field kind goes through the cache and comes back as the ORM gives it."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest

from listy.schema import build_schema
from tests.testapp.models import Comment, Follow, Sample

pytestmark = pytest.mark.django_db(transaction=True)


def test_schema_columns_are_the_fields_in_order_with_their_kinds():
    schema = build_schema(Follow)
    assert schema.attnames == ["id", "created", "follower_id", "followee_id"]
    assert [c.kind for c in schema.columns] == ["int", "datetime", "int", "int"]
    assert schema.native.attnames == schema.attnames


def test_inlined_fields_are_columns_and_change_the_fingerprint():
    schema = build_schema(Comment, {"entry": ["created", "title"]})
    assert schema.attnames[-2:] == ["entry_id.created", "entry_id.title"]
    assert schema.related["entry_id"][0] == "entry"
    assert schema.fingerprint != build_schema(Comment).fingerprint


def test_a_follow_record_is_small(users):
    me, you = users[:2]
    follow = Follow.cache.add(follower=me, followee=you)
    row = Follow.cache.source.row_of(follow)
    packed = Follow.cache.schema.native.pack(row, ["follower_id"])
    assert len(packed) <= 16


FULL = dict(
    flag=True,
    ratio=2.5,
    name="héllo ✓",
    blob=b"\x00\x01binary\xff",
    at=datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC),
    day=datetime.date(1969, 12, 31),
    tm=datetime.time(23, 59, 58, 999),
    amount=decimal.Decimal("-123.45"),
    uid=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    data={"a": [1, 2, {"b": None}], "c": "ü"},
    count=-(2**31),
)


def fields_of(obj) -> dict:
    return {name: getattr(obj, name) for name in [*FULL, "owner_id", "id"]}


@pytest.mark.parametrize("values", [FULL, {}], ids=["full", "defaults-and-nulls"])
def test_every_field_kind_comes_back_as_the_orm_gives_it(users, values, django_assert_num_queries):
    me = users[0]
    added = Sample.cache.add(owner=me, **values)
    orm = Sample.objects.filter(pk=added.pk).get()
    Sample.cache.get(owner=me)
    Sample.cache.get_one(added.pk)
    with django_assert_num_queries(0):
        (cached,) = Sample.cache.get(owner=me)
        by_pk = Sample.cache.get_one(added.pk)
    expected = fields_of(orm)
    expected["blob"] = bytes(expected["blob"])
    for obj in (cached, by_pk):
        got = fields_of(obj)
        got["blob"] = bytes(got["blob"])
        assert got == expected


def test_a_built_list_equals_an_added_one(users):
    """The record written by add() and the one built from the database are
    the same record."""
    me = users[0]
    Sample.cache.add(owner=me, **FULL)
    added = Sample.cache.get(owner=me).values()
    Sample.cache.flush_all()
    built = Sample.cache.get(owner=me).values()
    assert added == built


class _Stamp(datetime.datetime):
    """A datetime subclass: converted through its attributes, not read raw."""


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC),
        datetime.datetime(1, 1, 1, tzinfo=datetime.UTC),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=datetime.UTC),
        datetime.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=datetime.UTC),
        datetime.datetime(2024, 3, 31, 2, 30, fold=1, tzinfo=datetime.UTC),
    ],
)
def test_a_datetime_packs_as_the_same_instant_in_any_zone(value):
    """UTC (and naive) datetimes are read from the object itself; every
    other zone, and subclasses, through their attributes and utcoffset():
    one instant packs to the same bytes either way."""
    native = build_schema(Follow).native

    def packed(dt: datetime.datetime) -> bytes:
        return native.pack((1, dt, 2, 3))

    expected = packed(value)
    zones = [datetime.timezone(datetime.timedelta(hours=h, minutes=m)) for h, m in ((5, 30), (-8, 0), (0, 0))]
    for zone in zones:
        try:
            other = value.astimezone(zone)
        except OverflowError:  # past year 1 or 9999 in that zone
            continue
        assert packed(other) == expected
    assert packed(_Stamp(*value.timetuple()[:6], value.microsecond, tzinfo=datetime.UTC)) == expected
    assert packed(value.replace(tzinfo=None)) == expected  # naive: wall time as it is
