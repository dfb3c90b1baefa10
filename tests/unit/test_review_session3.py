"""Proofs from the third adversarial review session that need no socket: the ACL file
rewrite behind ``/api/v1/mqtt/acl`` (``acl.edit_acl_file``) and the password file rewrite
behind ``/api/v1/mqtt/users`` (``users.set_password``) against files as operators write
them, and config values (NaN and infinities, ``kafka.default_partitions``) from every
source.

``load_acl_file`` (and ``load_password_file``) split a file on ``\\n`` only, while
``edit_acl_file`` (and ``set_password``) count and keep lines with ``str.splitlines``,
which also breaks at form feed, vertical tab, the ``\\x1c``-``\\x1e`` separators, NEL
and U+2028/U+2029. A comment holding one of those is one line to the loader and two to
the editor: the text after it comes back from the rewrite as a line of its own, possibly
an active rule or user, and rule numbers stop matching the rules the API lists. Each
test proved such a bug while marked ``xfail(strict=True)``; the mark came off with the
fix (both now split on ``\\n`` only).
The socket-level proofs are in
``tests/integration/test_review_session3.py``.
"""

from __future__ import annotations

import pytest

from robustmq.broker.auth.acl import edit_acl_file, format_rule, load_acl_file
from robustmq.broker.auth.users import (
    format_line,
    load_password_file,
    new_user,
    remove_user,
    set_password,
)
from robustmq.config import ConfigError, check_key, load_config
from robustmq.errors import AclFileChanged, InvalidMetaCommand, MetaUnavailable, kafka_error_code

# A comment with a form feed (Emacs' page break, "^L") in it, before the real rules.
ACL = "# old rules below are retired\x0cdeny all all secret/#\nallow all all #\n"


def _lines(rules) -> list[str]:
    return [format_rule(r) for r in rules]


def test_the_loader_reads_the_form_feed_comment_as_one_comment(tmp_path):
    # The control for the tests below: the file holds exactly one rule.
    path = tmp_path / "acl"
    path.write_text(ACL)
    assert _lines(load_acl_file(str(path))) == ["allow all all #"]


def test_adding_a_rule_does_not_activate_text_inside_a_comment(tmp_path):
    path = tmp_path / "acl"
    path.write_text(ACL)
    rules = edit_acl_file(str(path), insert="deny user:bob all x/#")
    assert _lines(rules) == ["allow all all #", "deny user:bob all x/#"]
    assert path.read_text() == ACL + "deny user:bob all x/#\n"  # the comment kept as it was


def test_removing_rule_0_removes_the_rule_the_api_lists_as_0(tmp_path):
    path = tmp_path / "acl"
    path.write_text(ACL)
    assert _lines(load_acl_file(str(path)))[0] == "allow all all #"
    rules = edit_acl_file(str(path), remove=0)
    assert _lines(rules) == []
    assert path.read_text() == "# old rules below are retired\x0cdeny all all secret/#\n"


def test_an_acl_file_that_is_a_symlink_is_edited_through_the_link(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    target = shared / "acl"
    target.write_text("allow all all #\n")
    link = tmp_path / "acl"
    link.symlink_to(target)
    edit_acl_file(str(link), insert="deny user:bob all x/#")
    assert link.is_symlink()
    assert target.read_text() == "allow all all #\ndeny user:bob all x/#\n"


# ------------------------------------------------------------------ the password file


def test_adding_a_user_does_not_re_enable_a_commented_out_user(tmp_path):
    path = tmp_path / "passwd"
    mallory = format_line(new_user("mallory", "mallory-pw"))
    alice = format_line(new_user("alice", "alice-pw"))
    path.write_text(f"# disabled\x0c{mallory}\n{alice}\n")
    assert load_password_file(str(path)).get("mallory") is None  # the control
    set_password(str(path), "bob", "bob-pw")
    assert load_password_file(str(path)).get("mallory") is None


# ------------------------------------------------------------------ the fixes, more widely


@pytest.mark.parametrize("separator", ["\x0b", "\x1c", "\x85", "\u2028", "\u2029", "\r"])
def test_every_separator_splitlines_knows_stays_inside_its_comment(tmp_path, separator):
    # "\r" too: a file opened in text mode turns a lone "\r" into a line break.
    path = tmp_path / "acl"
    text = f"# retired{separator}deny all all secret/#\nallow all all #\n"
    path.write_bytes(text.encode())
    rules = edit_acl_file(str(path), insert="deny user:bob all x/#")
    assert _lines(rules) == ["allow all all #", "deny user:bob all x/#"]
    assert path.read_bytes() == (text + "deny user:bob all x/#\n").encode()


def test_an_acl_edit_by_position_is_refused_when_the_file_holds_other_rules(tmp_path):
    path = tmp_path / "acl"
    path.write_text("allow all all #\n")
    in_memory = load_acl_file(str(path))
    path.write_text("deny all all secret/#\nallow all all #\n")  # edited by hand since
    with pytest.raises(AclFileChanged):
        edit_acl_file(str(path), remove=0, expected=in_memory)
    assert path.read_text() == "deny all all secret/#\nallow all all #\n"  # left alone
    # Comments and blank lines added by hand change no rule: the edit goes ahead.
    path.write_text("# note\n\nallow all all #\n")
    assert edit_acl_file(str(path), remove=0, expected=in_memory) == []
    assert path.read_text() == "# note\n\n"


def test_removing_a_user_keeps_a_commented_out_user_commented_out(tmp_path):
    path = tmp_path / "passwd"
    mallory = format_line(new_user("mallory", "mallory-pw"))
    alice = format_line(new_user("alice", "alice-pw"))
    path.write_text(f"# disabled\u2028{mallory}\n  {alice}\n")
    assert remove_user(str(path), "alice") is True  # found though the line is indented
    assert path.read_text() == f"# disabled\u2028{mallory}\n"
    assert len(load_password_file(str(path))) == 0
    assert remove_user(str(path), "mallory") is False  # a comment is nobody


def test_a_password_file_that_is_a_symlink_is_edited_through_the_link(tmp_path):
    target = tmp_path / "shared-passwd"
    target.write_text(format_line(new_user("alice", "alice-pw")) + "\n")
    link = tmp_path / "passwd"
    link.symlink_to(target)
    assert set_password(str(link), "bob", "bob-pw") is True
    assert link.is_symlink()
    assert load_password_file(str(target)).get("bob") is not None


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_a_non_finite_float_is_refused_from_every_source(tmp_path, text):
    path = tmp_path / "robustmq.toml"
    path.write_text(f"[auth]\npublish_rate = {text}\n")  # TOML has nan and inf literals
    with pytest.raises(ConfigError, match="auth.publish_rate.*finite"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="auth.publish_rate.*finite"):
        load_config(environ={"ROBUSTMQ_AUTH_PUBLISH_RATE": text})
    with pytest.raises(ConfigError, match="auth.publish_rate.*finite"):
        check_key("auth.publish_rate", text)
    with pytest.raises(ConfigError, match="auth.publish_rate.*finite"):
        check_key("auth.publish_rate", float(text))


def test_default_partitions_is_bounded_by_what_a_topic_may_have():
    from robustmq.broker.kafka import registry

    assert registry.MAX_PARTITIONS == 10_000
    assert check_key("kafka.default_partitions", 10_000)[2] == 10_000
    with pytest.raises(ConfigError, match="kafka.default_partitions"):
        check_key("kafka.default_partitions", 10_001)


def test_a_command_the_meta_service_refused_is_not_a_retriable_kafka_error():
    # Retrying a refused command is refused again; an outage is worth a retry.
    assert kafka_error_code(InvalidMetaCommand("offset.commit_batch needs ...")) == -1
    assert kafka_error_code(MetaUnavailable("no meta node answered")) == 15
