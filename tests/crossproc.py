"""A second OS process for the cross-process tests.

Usage: ``python tests/crossproc.py add|add-then-die|add-then-die-before-commit|delete|list FOLLOWER [FOLLOWEE]`` with
``LISTY_TEST_DB_NAME`` and ``LISTY_SERVERS`` pointing at the first process's
test database and memcached. Prints primary keys.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from tests.testapp.models import Follow  # noqa: E402


def main(argv: list[str]) -> None:
    command, follower = argv[0], int(argv[1])
    if command == "add":
        follow = Follow.cache.add(follower_id=follower, followee_id=int(argv[2]))
        print(follow.pk if follow is not None else "none")
    elif command == "add-then-die":
        # Dies after COMMIT, before Listy's cache work: the on_commit hook
        # registered first runs first.
        from django.db import transaction

        with transaction.atomic():
            transaction.on_commit(lambda: os._exit(0))
            follow = Follow.cache.add(follower_id=follower, followee_id=int(argv[2]))
            print(follow.pk if follow is not None else "none", flush=True)
    elif command == "add-then-die-before-commit":
        from django.db import transaction

        with transaction.atomic():
            Follow.cache.add(follower_id=follower, followee_id=int(argv[2]))
            sys.stdout.flush()
            os._exit(0)
    elif command == "delete":
        print(Follow.cache.delete(follower_id=follower, followee_id=int(argv[2])))
    elif command == "list":
        n = len(connection.queries)
        pks = [f.pk for f in Follow.cache.get(follower_id=follower)]
        print(*pks)
        print(f"queries={len(connection.queries) - n}")
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    connection.force_debug_cursor = True  # count queries
    main(sys.argv[1:])
