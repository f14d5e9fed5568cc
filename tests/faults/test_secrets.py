"""No credential value in any workflow history the suite produced, nor in any lab's logs.

Every lab the suite starts archives its Temporal histories when it stops (LabRun.down), next to
its logs and its generated credentials, and is scanned right then: a leak fails the module that
started the lab, in whichever test process ran it. This module runs last in its process (see the
``after_everything`` marker in tests/conftest.py), runs one incident of its own so that it always
has something to read, and reads again every lab of the session found on disk (inputs, results,
failures, memos, search attributes, logs). Spans are scanned where they are exported
(tests/lab/test_promotion_unplanned.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.stack import LabPaths, write_secrets
from tests.faults.conftest import chaos, promotion_result, start_failover, temporal
from tests.lab.conftest import HISTORY_ARCHIVE, LabRun, running_lab, secret_findings

pytestmark = pytest.mark.after_everything


@pytest.fixture(scope="module")
def own_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    with running_lab(tmp_path_factory) as run:
        yield run


async def test_an_incident_of_its_own_leaves_histories_to_read(own_lab: LabRun) -> None:
    client = await temporal(own_lab)
    chaos(own_lab, "kill", "primary")
    start_failover(own_lab)
    report = await promotion_result(client, 120)
    assert report.outcome.value == "promoted", report.outcome_detail


def test_no_credential_value_in_any_history_or_lab_log(
    own_lab: LabRun, tmp_path_factory: pytest.TempPathFactory
) -> None:
    own_lab.down()  # archives this lab's histories now; the fixture's later down is a no-op
    # Each lab once (pytest adds "<name>current" links to the newest of each name); under
    # pytest-xdist each process has a directory of its own in the session's.
    base = tmp_path_factory.getbasetemp()
    session = base.parent if base.name.startswith("popen-gw") else base
    labs = sorted({p.parent.resolve() for p in session.glob("**/secrets.env")})
    assert own_lab.root.resolve() in labs
    histories = [h for lab in labs for h in (lab / HISTORY_ARCHIVE).glob("*.json")]
    own = list((own_lab.root / HISTORY_ARCHIVE).glob("*.json"))
    assert len(own) >= 4, own  # the promotion and its three venue recoveries at least
    read, found = 0, []
    for lab in labs:
        files, in_lab = secret_findings(lab)
        read += files
        found += in_lab
    assert read > len(histories)
    assert found == [], found


def test_the_scan_finds_a_credential_where_there_is_one(tmp_path: Path) -> None:
    """The scan above passes by finding nothing, so show that it finds what is there."""
    write_secrets(LabPaths(tmp_path), {"LAB_VENUE_ALPHA_API_KEY": "k-3f9a1c"})
    (tmp_path / HISTORY_ARCHIVE).mkdir()
    (tmp_path / HISTORY_ARCHIVE / "h.json").write_text('{"input": "clean"}')
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "worker.log").write_text("connect failed: key=k-3f9a1c\n")
    files, found = secret_findings(tmp_path)
    assert files == 2
    assert found == [f"LAB_VENUE_ALPHA_API_KEY in {tmp_path / 'logs' / 'worker.log'}"]


def test_a_lab_that_logged_a_credential_fails_when_it_stops(tmp_path: Path) -> None:
    """Every lab's own scan, as LabRun.down runs it: it names the variable, never the value."""
    write_secrets(LabPaths(tmp_path), {"LAB_VENUE_BETA_API_SECRET": "s-77e0b2"})
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "oms-dr.log").write_text("signing with s-77e0b2\n")
    with pytest.raises(AssertionError, match="LAB_VENUE_BETA_API_SECRET in ") as failed:
        LabRun(tmp_path).down()
    assert "s-77e0b2" not in str(failed.value)
