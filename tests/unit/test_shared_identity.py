"""The three-way merge by which servers on one store share their identity document (no store needed)."""

from __future__ import annotations

from netmeta.server.shared_identity import merge


def user(ident: str, name: str, **kw: object) -> dict[str, object]:
    return {"id": ident, "name": name, "roles": {}, **kw}


def test_edits_here_apply_onto_the_store_and_keep_edits_made_elsewhere() -> None:
    base = {"projects": [{"id": "p1", "name": "admin"}], "users": [user("u1", "admin"), user("u2", "bob")]}
    # Here: carol added, bob's roles changed, admin untouched.
    local = {"projects": base["projects"], "users": [user("u1", "admin"), user("u2", "bob", roles={"p1": ["member"]}),
                                                     user("u3", "carol")]}
    # Meanwhile elsewhere: dave added, a project added.
    remote = {"projects": [*base["projects"], {"id": "p2", "name": "delta"}],
              "users": [*base["users"], user("u4", "dave")]}
    merged = merge(base, local, remote)
    assert [p["id"] for p in merged["projects"]] == ["p1", "p2"]
    assert {u["id"]: u["roles"] for u in merged["users"]} == {"u1": {}, "u2": {"p1": ["member"]}, "u4": {}, "u3": {}}


def test_a_removal_here_removes_it_from_the_store_but_not_what_was_never_seen_here() -> None:
    base = {"users": [user("u1", "admin"), user("u2", "bob")]}
    local = {"users": [user("u1", "admin")]}
    remote = {"users": [user("u1", "admin"), user("u2", "bob"), user("u5", "eve")]}
    assert [u["id"] for u in merge(base, local, remote)["users"]] == ["u1", "u5"]
    # Nothing changed here: the store's document as it is.
    assert merge(remote, remote, {"users": [user("u9", "zed")]}) == {"users": [user("u9", "zed")],
                                                                       "projects": [], "application_credentials": []}


def test_revocations_in_the_store_are_the_unexpired_ones() -> None:
    from netmeta.server.shared_identity import REVOKED, revocations

    docs = {REVOKED: '{"old":100.0,"live":300.5,"junk":"x"}'}
    assert revocations(docs, now=200.0) == {"live"}
    assert revocations({}, now=0.0) == set() and revocations({REVOKED: "[1]"}, now=0.0) == set()
    assert revocations({REVOKED: "{not json"}, now=0.0) == set()
