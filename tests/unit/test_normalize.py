"""Display-text cleanup and the per-chunk embed-text transform."""

from __future__ import annotations

from typing import Any

import pytest

from embedline.tasks.config import PreprocessParams
from embedline.tasks.normalize import EmbedTransform, clean_text, dehyphenate, strip_comments

pytestmark = pytest.mark.unit


def params(**kw: Any) -> PreprocessParams:
    return PreprocessParams.model_validate(kw)


def test_unicode_form_nfkc_and_none() -> None:
    raw = "ﬁle Ｆｕｌｌ café"  # ligature, full-width letters, e + combining acute
    assert clean_text(raw, params()) == "file Full café"
    assert clean_text(raw, params(unicode_form="none")) == raw


def test_control_and_invisible_characters_removed() -> None:
    raw = "a\x00b\x07c\u200bd\ufeffe soft\u00adhyphen\x1b"
    assert clean_text(raw, params()) == "abcde softhyphen"


def test_whitespace_cleanup_keeps_paragraph_breaks() -> None:
    raw = "  First   line\t here  \r\nsecond line\n\n\n\n  \nNew   paragraph\f  after a page  "
    out = clean_text(raw, params())
    assert out == "First line here\nsecond line\n\nNew paragraph\n\nafter a page"


def test_dehyphenation() -> None:
    assert dehyphenate("infor-\nmation retrieval") == "information retrieval"
    assert dehyphenate("infor-  \n   mation") == "information"
    assert dehyphenate("Anglo-\nSaxon") == "Anglo-\nSaxon"  # capitalised continuation: a compound
    assert dehyphenate("2019-\n2020") == "2019-\n2020"
    assert clean_text("the infor-\nmation age", params()) == "the information age"
    assert (
        clean_text("the infor-\nmation age", params(dehyphenate=False)) == "the infor-\nmation age"
    )


def test_code_mode_keeps_indentation_and_hyphens() -> None:
    code = "def f(x):\r\n    if x:   \n        return x-\ny\n\n\n\n    return 0\n"
    out = clean_text(code, params(), mode="code")
    assert out == "def f(x):\n    if x:\n        return x-\ny\n\n    return 0"


def test_markdown_mode_keeps_indentation_and_fenced_alignment() -> None:
    md = "- item\n    - nested   item\n\n```\nx  =  1   # aligned\n```\n"
    out = clean_text(md, params(), mode="markdown")
    assert out == "- item\n    - nested item\n\n```\nx  =  1   # aligned\n```"


def test_embed_transform_is_identity_by_default() -> None:
    t = EmbedTransform(params())
    assert t.identity
    assert t("Keep Casing, please.") == "Keep Casing, please."


def test_lowercase() -> None:
    assert EmbedTransform(params(lowercase=True))("Dr. Smith of NASA") == "dr. smith of nasa"


def test_lemmatize_offline_lookup() -> None:
    out = EmbedTransform(params(lemmatize=True))("The children were running to the mice.")
    assert out == "The child be run to the mouse."


@pytest.mark.parametrize(
    ("kind", "expected"), [("porter", "run quickli"), ("snowball", "run quick")]
)
def test_stemmers(kind: str, expected: str) -> None:
    assert EmbedTransform(params(stem=kind))("running quickly") == expected


def test_linguistic_transforms_skip_code() -> None:
    t = EmbedTransform(params(stem="porter", lemmatize=True))
    assert (
        t("running_total = compute(items)", code_language="python")
        == "running_total = compute(items)"
    )


def test_strip_comments_python_respects_strings() -> None:
    code = '#!/usr/bin/env python\nx = "# not a comment"  # a comment\n# whole line\ny = 2\n'
    assert strip_comments(code, "python") == '#!/usr/bin/env python\nx = "# not a comment"\ny = 2'


def test_strip_comments_c_like() -> None:
    code = 'let url = "http://example.org"; // trailing\n/* block\n comment */\nlet y = 1;'
    assert strip_comments(code, "javascript") == 'let url = "http://example.org";\nlet y = 1;'
    assert strip_comments(code, "unknown-language") == code


def test_comment_stripping_only_with_the_flag_and_keeps_all_comment_chunks() -> None:
    code = "x = 1  # note"
    assert EmbedTransform(params())(code, code_language="python") == code
    t = EmbedTransform(params(strip_code_comments=True))
    assert t(code, code_language="python") == "x = 1"
    assert t("# only a comment", code_language="python") == "# only a comment"
    assert t("prose # with hash") == "prose # with hash"  # prose is never comment-stripped


def test_unknown_lemmatizer_language_fails_clearly() -> None:
    with pytest.raises(ValueError, match="lookup tables"):
        EmbedTransform(params(lemmatize=True, language="xx-nonexistent"))("text")
