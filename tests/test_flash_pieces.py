# edge/runtime/flash.py's pieces (docs/persistence.md "Flash wear"): small
# synced batches kept as files of their own, `<name>+<offset>`, merged into
# their file later. Exercised on CPython with flash.Pieces on real files (on
# MicroPython it is the default `Flash`: tests/test_flash_files.py's runs
# under the unix port, and tests/test_flashwear.py on littlefs), including
# the states a power cut can leave between a merge's commit and its removes.
import os

from edge.runtime import flash
from edge.runtime.flash import Files, Pieces
from edge.store.log import Log
from tests import flash_check


def _names(d):
    return sorted(os.listdir(d))


def _read(f, name):
    out = bytearray()
    buf = bytearray(7)  # small: reads cross the file/piece boundaries
    while True:
        n = f.readinto(name, len(out), memoryview(buf))
        if not n:
            return bytes(out)
        out += buf[:n]


def test_small_synced_batches_become_pieces_and_read_as_one_file(tmp_path):
    d = str(tmp_path)
    f = Pieces(d)
    f.append("seg", b"x" * 200)  # over the piece size: into the file
    f.sync("seg")
    f.append("seg", b"ab")
    f.append("seg", b"cd")  # one batch, one piece
    f.sync("seg")
    f.append("seg", b"efg")
    f.sync("seg")
    assert _names(d) == ["seg", "seg+200", "seg+204"]
    assert os.path.getsize(os.path.join(d, "seg")) == 200
    assert f.listdir() == ["seg"] and f.size("seg") == 207
    assert _read(f, "seg") == b"x" * 200 + b"abcdefg"
    f.close()  # a clean stop merges
    assert _names(d) == ["seg"] and open(os.path.join(d, "seg"), "rb").read() == b"x" * 200 + b"abcdefg"


def test_a_file_of_pieces_only_is_listed(tmp_path):
    d = str(tmp_path)
    f = Pieces(d)
    f.append("new", b"first")
    f.sync("new")
    assert _names(d) == ["new+0"] and f.listdir() == ["new"] and f.size("new") == 5
    g = Pieces(d)  # as after a power cut: the piece is the file's tail
    assert g.listdir() == ["new"] and _read(g, "new") == b"first"


def test_pieces_merge_in_one_write_when_there_are_enough(tmp_path):
    d = str(tmp_path)
    f = Pieces(d)
    want = b""
    for i in range(flash._PIECES + 1):
        b = b"%03d" % i
        f.append("seg", b)
        f.sync("seg")
        want += b
    # _PIECES pieces, then the next sync appended them and itself to the file
    assert _names(d) == ["seg"] and open(os.path.join(d, "seg"), "rb").read() == want
    assert _read(f, "seg") == want


def test_a_large_batch_goes_after_the_pieces(tmp_path):
    d = str(tmp_path)
    f = Pieces(d)
    f.append("seg", b"small")
    f.sync("seg")
    f.append("seg", b"a")
    f.append("seg", b"L" * 300)  # grows past a piece: pieces first, then this batch
    f.sync("seg")
    assert _names(d) == ["seg"]
    assert open(os.path.join(d, "seg"), "rb").read() == b"small" + b"a" + b"L" * 300


def test_another_file_s_batch_keeps_both_in_order(tmp_path):
    d = str(tmp_path)
    f = Pieces(d)
    f.append("a", b"1")
    f.append("b", b"2")  # a's unsynced batch goes into a's file first
    f.sync("b")
    f.sync("a")
    assert _read(f, "a") == b"1" and _read(f, "b") == b"2"


def test_rename_truncate_remove_take_the_pieces_along(tmp_path):
    d = str(tmp_path)
    f = Pieces(d)
    for part in (b"hello ", b"world"):
        f.append("a", part)
        f.sync("a")
    f.rename("a", "b")
    assert _names(d) == ["b"] and f.listdir() == ["b"] and _read(f, "b") == b"hello world"
    f.append("b", b"!!")
    f.sync("b")
    f.truncate("b", 5)
    assert _names(d) == ["b"] and _read(f, "b") == b"hello"
    f.append("b", b"?")
    f.sync("b")
    f.remove("b")
    assert _names(d) == [] and f.listdir() == []


def test_a_cut_between_a_merge_and_its_removes(tmp_path):
    # The merge committed the file (it covers offsets 0..9) but the power
    # went before the pieces were removed: at the next open they are known
    # as merged (their offsets are below the file's size) and go; a piece
    # that follows on is the tail; one after a gap cannot be and goes too.
    d = str(tmp_path)
    with open(os.path.join(d, "seg"), "wb") as f:
        f.write(b"0123456789")
    for name, data in (("seg+0", b"01234"), ("seg+5", b"56789"), ("seg+10", b"AB"), ("seg+20", b"gap")):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    p = Pieces(d)
    assert _names(d) == ["seg", "seg+10"]
    assert p.size("seg") == 12 and _read(p, "seg") == b"0123456789AB"


def test_a_file_that_does_not_hold_its_pieces_is_cut_back_to_them(tmp_path):
    # Bytes at a piece's offset that are not the piece's (a merge torn on a
    # filesystem without atomic commits, or a write behind the store's
    # back): the pieces are what was synced, the file is cut back to them.
    d = str(tmp_path)
    with open(os.path.join(d, "seg"), "wb") as f:
        f.write(b"01234torn")
    for name, data in (("seg+5", b"56789"), ("seg+10", b"AB"), ("seg+12", b"")):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    p = Pieces(d)
    assert _names(d) == ["seg", "seg+10", "seg+5"]
    assert p.size("seg") == 12 and _read(p, "seg") == b"0123456789AB"
    assert os.path.getsize(os.path.join(d, "seg")) == 5


def test_a_piece_grown_behind_the_store_s_back_goes_into_the_file(tmp_path):
    # No piece written here is over 128 bytes; a larger one (bytes appended
    # to it by something else) is not dropped: it joins the file at open.
    d = str(tmp_path)
    for name, data in (("seg+0", b"a" * 10), ("seg+10", b"b" * 300), ("seg+310", b"c")):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    p = Pieces(d)
    assert _names(d) == ["seg", "seg+310"]
    assert _read(p, "seg") == b"a" * 10 + b"b" * 300 + b"c"


def test_cpython_files_merge_a_board_s_pieces(tmp_path):
    # A board's store read on a Pi (Files makes no pieces): merged at open
    d = str(tmp_path)
    p = Pieces(d)
    p.append("seg", b"from the board")
    p.sync("seg")  # (no close: as a power cut leaves it)
    f = Files(d)
    assert _names(d) == ["seg"] and f.size("seg") == 14 and _read(f, "seg") == b"from the board"


def test_the_store_over_pieces(tmp_path):
    # The store's own scenario (rotation, damage, compaction) over pieces,
    # then every record back after a reopen without a clean close
    path = str(tmp_path / "s")
    orig = flash_check.Flash
    flash_check.Flash = Pieces
    try:
        assert flash_check.scenario(path) == 40
    finally:
        flash_check.Flash = orig
    q = str(tmp_path / "q")
    log = Log(Pieces(q))
    log.open(0)
    seqs = []
    for i in range(50):
        seqs.append(log.append(16, b"r%d" % i))
        log.flush()  # a batch each: a piece each
    assert any("+" in n for n in os.listdir(q))
    log = Log(Pieces(q))  # (the first never closed: a power cut)
    log.open(0)
    assert [(s, b) for s, _, b in log.replay()] == [(s, b"r%d" % i) for i, s in enumerate(seqs)]


def test_a_flash_queue_drain_reads_the_records_still_in_the_batch(tmp_path):
    # A board's offline queue (edge/store/fqueue.py) over pieces: a message
    # queued on flash behind a full window, its record still in the batch,
    # is read back when an ack opens the window, before any commit. A piece
    # stays in RAM until its sync, so the read flushes the batch first;
    # reading only what was written went past it (b0 not sent, b1..b3 were)
    from edge.mqtt.packets import Puback
    from tests.core._pair import publish, publishes
    from tests.core.test_store_fqueue import Client, away_sub, boot

    b, log, st, _, _ = boot(Pieces(str(tmp_path / "q")), max_inflight=1)
    pub = away_sub(b)
    publish(pub, "q/t", b"a0", 1, pid=1)
    log.flush()
    sub = Client(b)
    sub.connect("sub", clean=False)
    got = []
    held = []
    for i in range(6):
        if i < 4:
            publish(pub, "q/t", b"b%d" % i, 1, pid=i + 10)  # queued on flash, in the batch
        for p in publishes(sub.recv()):
            got.append(p.payload)
            held.append(p.pid)
        for pid in held:
            sub.send(Puback(pid))  # the window opens: a read of the flash queue
        held = []
        log.flush()  # the round's commit
    assert got == [b"a0", b"b0", b"b1", b"b2", b"b3"]
