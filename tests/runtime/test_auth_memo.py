# The gateway's remembered read checks (edge/runtime/auth_cpython.py): the
# same answers as edge/auth/acl.py's Rules, bounded, writes never kept.
from edge.auth import acl as aclmod
from edge.runtime import auth_cpython

_ACL = """user alice
topic read sensors/+/temp
topic deny sensors/secret/#
topic readwrite alice/#
pattern readwrite clients/%c/#
"""


def test_memo_rules_answer_as_rules_and_stay_bounded(monkeypatch):
    monkeypatch.setattr(auth_cpython, "MEMO", 2)
    plain = aclmod.parse(_ACL.split("\n"))
    memo = aclmod.parse(_ACL.split("\n"))
    auth_cpython.remember(memo)
    r, p = memo.rules("alice", "c1"), plain.rules("alice", "c1")
    assert isinstance(r, auth_cpython.MemoRules)
    for _ in range(2):
        for t in ("sensors/1/temp", "sensors/secret/temp", "alice/x", "clients/c1/a", "clients/c2/a", "b"):
            for access in (aclmod.READ, aclmod.WRITE):
                assert r.can(t, access) == p.can(t, access), (t, access)
        assert r.can("sensors/#", aclmod.READ, True) == p.can("sensors/#", aclmod.READ, True)
        assert len(r.memo) <= 2
    assert set(r.memo.values()) <= {True, False}
    auth_cpython.remember(None)  # no ACL file: nothing to do
