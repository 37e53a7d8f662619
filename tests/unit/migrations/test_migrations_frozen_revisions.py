"""Applied revisions are never edited, not even to follow a moved import.

The runner records each revision's checksum (SHA-256 of the file) when it
applies it and refuses to run against a database whose recorded checksum
differs from the file's. Editing a shipped revision — moving the package,
fixing an import path, reformatting — would stop ``keel migrate apply`` on
every existing deployment. This table pins the checksum of every shipped
revision; a new revision is added to it, an old one never changes.
"""

from __future__ import annotations

from keel.db.migrations import concurrently as frozen_path
from keel.migrations.operations import concurrently
from keel.migrations.script.graph import Scripts

SHIPPED = {
    "0001": "9990e298d98a2b2ba74b526cb356bff6f243aa43b9c3084d2e9cced7a6ecc78e",
    "0002": "c91946dee1d303f0bcd349a0754d27f80c6e29e5ed32d45169a2e598d850695b",
    "0003": "580231828255a3eb7adbcb74acccccf043965b522ed5a84a85c4c85c9c82caca",
    "0004": "e62502e3c4809ee1eddcdc57f2839ff75e358b100864152b6feba76e51db1b97",
    "0006": "f33e68d973626b4334188276689e59184896db456079600189882d3faedfab8f",
    "0007": "97174fbc49a27448c55676d61deca9075070a6b97c216a5d22be4aee06434e00",
    "0008": "02ef94d77b03daceef5201e0474b57f20759467c59ca98dac5015d38ff8cbb86",
    "0009": "ad41697221c3494b717442bb32d5031a3780fb2321d5a43c26d50605520a8576",
    "0010": "d762729dfb6357947d0570897ab0e120b78cfabaa41329ca960e9b913c4637ce",
    "0011": "ed3d068e9b3e9671b79b07e078717b618a3bba5e0f9ab5e65626dfd16d924486",
    "0012": "35d92b29eed02f7c700d9b9288178b678482ee5abdef5f2b8f2d862f6b063a0d",
    "0013": "1b75f69573041fd4bdc4c7d7b5b021d5b4020f099067662d26884c428e65f4d8",
    "0014": "e92fc77da954b9c88819a577f013a325ba4a1255ff8d0a4eca3d52ae359b2153",
    "0015": "5a3019b4b572d83948a8de4a93bf18cad11b86cbd3707065756103b9e880c31d",
    "0016": "3e454cca633890aa2bc3cbc2f72fc54f2deff6079d2416925c7c0583a74590bd",
    "0017": "9e08e56ef4a9196a2a1ee807d5d4ff54ce8afc79ff1aa5a93ca622a0e465c1b7",
}


def test_every_shipped_revision_keeps_the_checksum_it_was_applied_with() -> None:
    current = {item.revision: item.checksum for item in Scripts().all()}
    assert {revision: current.get(revision) for revision in SHIPPED} == SHIPPED


def test_the_import_path_frozen_revisions_use_is_the_live_helper() -> None:
    assert frozen_path.build_index is concurrently.build_index
    assert frozen_path.drop_index is concurrently.drop_index
