"""The report document's Markdown helpers: `splice` rebuilds a generated block in a page."""

import re

import pytest

from ecab_tune.reporting.document import splice

PAGE = "Intro.\n<!-- begin x -->\nold\ntable\n<!-- end x -->\nOutro <!-- begin y --> kept.\n"


def test_splice_replaces_only_the_tagged_block():
    new = splice(PAGE, "x", "\nnew table\n\n")
    assert (
        new == "Intro.\n<!-- begin x -->\nnew table\n<!-- end x -->\nOutro <!-- begin y --> kept.\n"
    )
    assert splice(new, "x", "old\ntable") == PAGE  # idempotent round trip


@pytest.mark.parametrize("page", ["no markers", PAGE.replace("<!-- end x -->", ""), PAGE * 2])
def test_splice_refuses_a_page_without_exactly_one_block(page):
    with pytest.raises(
        ValueError, match=re.escape("needs one <!-- begin x --> ... <!-- end x --> block")
    ):
        splice(page, "x", "body")
