#!/usr/bin/env python3
"""Replays shared/entra/vectors against the vendor apps of a running `scim-bridge demo`, then checks what
each vendor simulator holds. Standard library only.

Usage: vendor_replay.py --demo-log FILE --replay PATH/replay.py --vectors DIR [--token T]

The demo log is `scim-bridge demo`'s banner: lines `  <app>: <base>   token: T   simulator: <url>/_sim/users`.
Per vendor app:
  1. every user/auth/error vector must pass, and after each one what Entra was told must be what the
     vendor holds: every user the gateway lists is at the simulator with the same `active`, and every
     simulator user the gateway no longer lists is gone or disabled;
  2. every group vector must stop at its first group request with a 501 SCIM error (no vendor has groups),
     except on the apps the banner lists with `group_roles: [...]` (`<vendor>-groups`), where the gateway keeps
     the groups and maps them to vendor roles: there every group vector must pass as published, and again
     with its group named as a mapped group (`grp-${uuid}` -> e.g. "Process Owners"), run step by step with
     the replay runner: after every step, and after the vector's clean-up, each of the vector's users must
     hold at the simulator the role its groups give it (the mapped group's role while a member, its own
     role otherwise), and the vectors that add a member must have shown the mapped role at least once.
     Then a member of a mapped group holds the group's role until it leaves the group, and a group mapped
     by objectId (`group_id`: its externalId) gives its role whatever its name;
  3. afterwards the simulator holds every vector user deleted: gone (ProdPad SCIM deletes) or disabled
     (Promapp and PROMPT only disable);
  4. a create / disable / enable / delete lifecycle, checking the simulator after each step.
Ends with one line "N passed, M failed" (checks); exit status 0 only when M is 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, token: str | None = None, body: object | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/scim+json")
    try:
        with _OPENER.open(req, timeout=20) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, (json.loads(raw) if raw.strip() else None)


def sim_user(sim_users_url: str, user_name: str) -> dict | None:
    _, users = http("GET", sim_users_url)
    for u in users or []:
        for key in ("userName", "user_name", "email"):
            if str(u.get(key, "")).lower() == user_name.lower():
                return u
    return None


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {what}")


def vendor_name(u: dict) -> str:
    for key in ("userName", "user_name", "email"):
        if u.get(key):
            return str(u[key]).lower()
    return ""


def inconsistencies(base: str, token: str, sim_users_url: str) -> list[str]:
    """Differences between the gateway's view (what Entra was told) and the simulator's store."""
    _, listed = http("GET", f"{base}/Users?startIndex=1&count=1000", token)
    told = {str(r.get("userName", "")).lower(): r.get("active", True) is not False
            for r in (listed or {}).get("Resources", [])}
    _, held_list = http("GET", sim_users_url)
    held = {vendor_name(u): u.get("active", True) is not False for u in held_list or []}
    problems = []
    for name, active in told.items():
        if name not in held:
            problems.append(f"{name}: Entra was told it exists, the vendor has no such user")
        elif held[name] != active:
            problems.append(f"{name}: Entra was told active={active}, the vendor holds active={held[name]}")
    for name, active in held.items():
        if name not in told and active:
            problems.append(f"{name}: active at the vendor, unknown to Entra")
    return problems


def entra_user(user_name: str) -> dict:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "externalId": f"ext-{user_name}",
        "userName": user_name,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "name": {"givenName": "Lifecycle", "familyName": "Check"},
        "roles": [{"primary": True, "type": "WindowsAzureActiveDirectoryRole", "value": "Editor"}],
    }


def patch(ops: list) -> dict:
    return {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}


# An app's group_roles as the demo banner lists them (tools/devkit/src/demo.rs), in order of precedence:
# [{"group": displayName or None, "group_id": Entra objectId or None, "role": vendor role}].
GroupRoles = list[dict]


def mapped_group(entries: GroupRoles) -> tuple[str, str]:
    """The group (by name) the vectors and the membership check use: the last one mapped by name, the
    lowest in precedence (ProdPad's simulator has few seats for the first, Admin)."""
    named = [e for e in entries if e.get("group")]
    return named[-1]["group"], named[-1]["role"]


def vendor_roles(u: dict | None) -> list[str]:
    if not u:
        return []
    if "role_type" in u:
        return [u["role_type"]]
    return [r.get("display") or r.get("value") for r in u.get("roles") or []]


def holds(held: dict | None, want: list[str]) -> bool:
    """Whether the vendor holds `want` as the user's roles. A user left with no role at all may instead be
    held disabled with its last roles kept: a vendor that requires a role (Promapp, with group_roles)
    disables such a user and leaves its roles as they were."""
    return vendor_roles(held) == want or (not want and held is not None and held.get("active") is False)


def check_group_role(c: Checks, app: str, entries: GroupRoles, base: str, token: str, sim_users: str) -> None:
    """A member of a mapped group holds its role at the simulator, and loses it on leaving the group."""
    group, role = mapped_group(entries)
    name = f"grouprole-{uuid.uuid4().hex[:8]}@example.com"
    body = entra_user(name)
    body["roles"] = []
    status, created = http("POST", f"{base}/Users", token, body)
    c.check(status == 201, f"{app}: group-role user create {status} {created}")
    uid = (created or {}).get("id", "missing")
    before = vendor_roles(sim_user(sim_users, name))
    status, g = http("POST", f"{base}/Groups", token, {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                                         "displayName": group, "externalId": f"g-{uuid.uuid4().hex}"})
    c.check(status == 201, f"{app}: create mapped group {status} {g}")
    gid = (g or {}).get("id", "missing")
    status, _ = http("PATCH", f"{base}/Groups/{gid}", token,
                     patch([{"op": "Add", "path": "members", "value": [{"$ref": None, "value": uid}]}]))
    c.check(status == 204, f"{app}: add member {status}")
    u = sim_user(sim_users, name)
    held = vendor_roles(u)
    c.check(held == [role], f"{app}: a member of {group!r} should hold {role!r} at the vendor, holds {held}")
    c.check(u is not None and u.get("active") is not False, f"{app}: a member of {group!r} should be active: {u}")
    status, _ = http("PATCH", f"{base}/Groups/{gid}", token,
                     patch([{"op": "Remove", "path": f'members[value eq "{uid}"]'}]))
    c.check(status == 204, f"{app}: remove member {status}")
    u = sim_user(sim_users, name)
    c.check(holds(u, before), f"{app}: after leaving {group!r} the vendor should hold {before} (or hold the user "
                              f"disabled if that is no role), holds {u}")
    for path in (f"/Groups/{gid}", f"/Users/{uid}"):
        http("DELETE", f"{base}{path}", token)
    print(f"   group {group!r} -> {role!r}: set on joining, taken back on leaving, at the simulator")


def group_role_of(entries: GroupRoles, groups: list[dict], uid: str) -> str | None:
    """The role the app's group_roles give `uid` when the gateway holds `groups`: the first entry (by exact
    displayName, or by objectId as the group's externalId) naming a group the user is in."""
    for entry in entries:
        role = entry["role"]
        for g in groups:
            if entry.get("group"):
                named = g.get("displayName") == entry["group"]
            else:
                named = str(g.get("externalId", "")).lower() == str(entry.get("group_id")).lower()
            if named and any(m.get("value") == uid for m in g.get("members") or []):
                return role
    return None


def mapped_vector(vector: Path, group: str) -> dict:
    """The vector with its group named `group` (a mapped group): `grp-${uuid}` replaced in bodies and
    expectations, and percent-encoded in paths."""
    data = json.loads(vector.read_text(encoding="utf-8"))
    steps = data["steps"] if isinstance(data, dict) else data

    def swap(value: object, in_path: bool = False) -> object:
        if isinstance(value, str):
            return value.replace("grp-${uuid}", urllib.parse.quote(group) if in_path else group)
        if isinstance(value, list):
            return [swap(v) for v in value]
        if isinstance(value, dict):
            return {k: swap(v, in_path=(k == "path" and isinstance(v, str) and v.startswith("/"))) for k, v in value.items()}
        return value

    return {"name": f"{vector.stem} (mapped group {group!r})", "steps": [swap(step) for step in steps]}


def load_replay(path: str):
    spec = importlib.util.spec_from_file_location("entra_replay", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_mapped_vectors(c: Checks, replay, app: str, entries: GroupRoles, base: str, token: str, sim_users: str,
                         vectors: list[Path]) -> None:
    """Each group vector with a mapped group, run step by step; after each step and after the clean-up,
    every user of the vector holds at the simulator the role its groups give it."""
    group, role = mapped_group(entries)
    seen_mapped = 0
    for vector in vectors:
        seen_before = seen_mapped
        # A vector that adds a member must show it holding the mapped role at some step.
        adds_member = '"members"' in vector.read_text()
        scenario = mapped_vector(vector, group)
        runner = replay.Runner(base, token, False)
        env: dict = {"uuid": str(uuid.uuid4())}
        created: list[str] = []
        own: dict[str, tuple[str, list[str]]] = {}  # gateway id -> (userName, roles held before any group)

        def check_roles(where: str, gone_ok: bool) -> None:
            nonlocal seen_mapped
            _, listed = http("GET", f"{base}/Groups?startIndex=1&count=1000", token)
            groups = (listed or {}).get("Resources", [])
            for uid, (name, own_roles) in own.items():
                held = sim_user(sim_users, name)
                if held is None and gone_ok:
                    continue
                want_role = group_role_of(entries, groups, uid)
                want = [want_role] if want_role else own_roles
                got = vendor_roles(held)
                c.check(holds(held, want), f"{app}: {scenario['name']} {where}: {name} should hold {want} at the "
                                           f"vendor (or be held disabled if that is no role), holds {held}")
                seen_mapped += want_role == role and got == want

        ok = True
        try:
            for idx, step in enumerate(scenario["steps"], 1):
                try:
                    runner.run_step(step, env, created)
                except replay.StepError as exc:
                    c.check(False, f"{app}: {scenario['name']} / {idx}. {step.get('name')}: {exc}")
                    ok = False
                    break
                for path in created:
                    uid = path.rsplit("/", 1)[-1]
                    if path.startswith("/Users/") and uid not in own:
                        _, u = http("GET", f"{base}/Users/{uid}", token)
                        name = (u or {}).get("userName", "")
                        own[uid] = (name, vendor_roles(sim_user(sim_users, name)))
                check_roles(f"after step {idx}", gone_ok=False)
        finally:
            runner.cleanup(created)
        # Clean-up deleted the group before its member: the member's own role is back (Promapp keeps the
        # disabled user; ProdPad SCIM deletes it).
        check_roles("after the clean-up", gone_ok=True)
        c.check(ok, f"{app}: {scenario['name']} should pass")
        c.check(not adds_member or seen_mapped > seen_before,
                f"{app}: {scenario['name']}: it adds a member, but no step showed one holding {role!r} at the vendor")
    c.check(seen_mapped > 0, f"{app}: no vector step showed a member holding {role!r} at the vendor")
    print(f"   group vectors with the mapped group {group!r}: the simulator's roles checked after "
          f"every step and the clean-up ({seen_mapped} member observation(s) of {role!r})")


def check_group_by_object_id(c: Checks, app: str, entries: GroupRoles, base: str, token: str, sim_users: str) -> None:
    """A group mapped by objectId (its externalId) gives its role whatever its displayName, renamed or not."""
    by_id = [e for e in entries if e.get("group_id")]
    if not by_id:
        print(f"   {app} maps no group by objectId")
        return
    object_id, role = by_id[0]["group_id"], by_id[0]["role"]
    name = f"byid-{uuid.uuid4().hex[:8]}@example.com"
    body = entra_user(name)
    body["roles"] = []
    status, created = http("POST", f"{base}/Users", token, body)
    c.check(status == 201, f"{app}: by-id user create {status} {created}")
    uid = (created or {}).get("id", "missing")
    before = vendor_roles(sim_user(sim_users, name))
    status, g = http("POST", f"{base}/Groups", token, {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                                         "displayName": f"team-{uuid.uuid4().hex[:8]}",
                                                         "externalId": object_id.upper()})
    c.check(status == 201, f"{app}: create a group with the mapped objectId {status} {g}")
    gid = (g or {}).get("id", "missing")
    status, _ = http("PATCH", f"{base}/Groups/{gid}", token,
                     patch([{"op": "Add", "path": "members", "value": [{"$ref": None, "value": uid}]}]))
    c.check(status == 204, f"{app}: add member {status}")
    c.check(vendor_roles(sim_user(sim_users, name)) == [role], f"{app}: a member of the group mapped by id should hold {role!r}")
    status, _ = http("PATCH", f"{base}/Groups/{gid}", token,
                     patch([{"op": "Replace", "path": "displayName", "value": f"renamed-{uuid.uuid4().hex[:8]}"}]))
    c.check(status == 204, f"{app}: rename {status}")
    held = vendor_roles(sim_user(sim_users, name))
    c.check(held == [role], f"{app}: after a rename the member should still hold {role!r}, holds {held}")
    http("DELETE", f"{base}/Groups/{gid}", token)
    u = sim_user(sim_users, name)
    c.check(holds(u, before), f"{app}: after the group's delete the vendor should hold {before} (or hold the user "
                              f"disabled if that is no role), holds {u}")
    http("DELETE", f"{base}/Users/{uid}", token)
    print(f"   group mapped by objectId -> {role!r}: set on joining, kept through a rename, taken back on delete")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo-log", required=True)
    ap.add_argument("--replay", required=True)
    ap.add_argument("--vectors", required=True)
    ap.add_argument("--token", default="demo-token")
    args = ap.parse_args()

    line_re = re.compile(r"^  ([^:\s]+): (http\S+)\s+token: \S+\s+simulator: (http\S+)\s+delete: (hard|disable)"
                         r"(?:\s+group_roles: (.*))?$")
    apps = [m.groups() for m in map(line_re.match, Path(args.demo_log).read_text().splitlines()) if m]
    if not apps:
        print("no vendor apps in the demo banner")
        print("0 passed, 1 failed")
        return 1
    vectors = sorted(Path(args.vectors).glob("*.json"))
    group_vectors = [v for v in vectors if v.stem.startswith("group-")]
    other_vectors = [v for v in vectors if not v.stem.startswith("group-")]
    c = Checks()
    replay = load_replay(args.replay)
    for app, base, sim_users, delete, group_roles_json in apps:
        group_roles: GroupRoles = json.loads(group_roles_json) if group_roles_json else []
        hard_delete = delete == "hard"
        print(f"== {app}: {len(other_vectors)} user vectors, {len(group_vectors)} group vectors")
        passed = 0
        for vector in other_vectors:
            run = subprocess.run([sys.executable, args.replay, "--base", base, "--token", args.token, str(vector)],
                                 capture_output=True, text=True)
            c.check(run.returncode == 0, f"{app}: {vector.stem}: {run.stdout}")
            passed += run.returncode == 0
            problems = inconsistencies(base, args.token, sim_users)
            c.check(not problems, f"{app}: after {vector.stem} the vendor differs from what Entra was told: {problems}")
        print(f"   user vectors: {passed} of {len(other_vectors)} passed, vendor state matched Entra's after each")

        run = subprocess.run([sys.executable, args.replay, "--base", base, "--token", args.token, *map(str, group_vectors)],
                             capture_output=True, text=True)
        fails = [l for l in run.stdout.splitlines() if l.startswith("FAIL ")]
        if group_roles:
            c.check(run.returncode == 0 and not fails, f"{app}: every group vector should pass: {run.stdout}")
            print(f"   group vectors: {len(group_vectors) - len(fails)} of {len(group_vectors)} passed (group_roles, unmapped names)")
            check_mapped_vectors(c, replay, app, group_roles, base, args.token, sim_users, group_vectors)
            check_group_role(c, app, group_roles, base, args.token, sim_users)
            check_group_by_object_id(c, app, group_roles, base, args.token, sim_users)
        else:
            c.check(len(fails) == len(group_vectors), f"{app}: every group vector should be refused, got {run.stdout}")
            for l in fails:
                c.check("got 501" in l and "does not support groups" in l, f"{app}: group refusal not a clear 501: {l}")
            print(f"   group vectors: {len(fails)} refused with 501 (groups are not supported by {app})")

        _, users = http("GET", sim_users)
        leftovers = [u for u in users or [] if str(u.get("userName", u.get("user_name", ""))).startswith("Test_User_")]
        if hard_delete:
            c.check(not [u for u in leftovers if u.get("active") is not False], f"{app}: vector users left active: {leftovers}")
        else:
            c.check(len(leftovers) > 0, f"{app}: a disable-only vendor should keep the vector users (disabled)")
            c.check(all(u.get("active") is False for u in leftovers), f"{app}: vector users not all disabled: {leftovers}")
        print(f"   after the vectors the simulator holds {len(leftovers)} vector user(s), none active")

        name = f"lifecycle-{uuid.uuid4().hex[:8]}@example.com"
        status, created = http("POST", f"{base}/Users", args.token, entra_user(name))
        c.check(status == 201, f"{app}: lifecycle create {status} {created}")
        uid = (created or {}).get("id", "missing")
        u = sim_user(sim_users, name)
        c.check(u is not None and u.get("active") is not False, f"{app}: vendor should hold {name} active: {u}")
        c.check(u is not None and "Lifecycle" in json.dumps(u), f"{app}: vendor should hold the given name: {u}")
        for value, want in (("False", False), (True, True)):
            status, _ = http("PATCH", f"{base}/Users/{uid}", args.token, patch([{"op": "Replace", "path": "active", "value": value}]))
            c.check(status in (200, 204), f"{app}: PATCH active={value}: {status}")
            u = sim_user(sim_users, name)
            c.check(u is not None and u.get("active") is want, f"{app}: vendor active should be {want}: {u}")
        status, _ = http("DELETE", f"{base}/Users/{uid}", args.token)
        c.check(status == 204, f"{app}: DELETE {status}")
        u = sim_user(sim_users, name)
        if hard_delete:
            c.check(u is None, f"{app}: vendor should no longer hold {name}: {u}")
        else:
            c.check(u is not None and u.get("active") is False, f"{app}: vendor should hold {name} disabled: {u}")
        print(f"   lifecycle create/disable/enable/delete checked at the simulator")
    print(f"{c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
