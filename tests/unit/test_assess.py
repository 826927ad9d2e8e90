"""The plan's success criteria judged from measured figures (replicator/assess/criteria.py)."""

from __future__ import annotations

from replicator.assess.criteria import (
    QUERIES,
    QueryTiming,
    Storage,
    index_used,
    loss_criterion,
    median,
    migrated_loss_criterion,
    on_table,
    query_criterion,
    storage_criterion,
)


def t(ms: float, index: bool = True) -> QueryTiming:
    return QueryTiming(ms, 5, index)


def test_queries_must_take_30_percent_less_time_and_unpaired_ones_do_not_count() -> None:
    passed = query_criterion({"a": (t(10), t(5)), "b": (t(10), t(8)), "user": (None, t(99))})
    assert passed.passed and "20.00 ms -> 13.00 ms over 2 paired queries (35% faster)" in (
        passed.figure
    )
    failed = query_criterion({"a": (t(10), t(8))})
    assert not failed.passed and "(20% faster)" in failed.figure
    slower = query_criterion({"a": (t(10), t(12))})
    assert not slower.passed and "(20% slower)" in slower.figure  # said plainly
    assert not query_criterion({"user": (None, t(1))}).passed


def test_storage_is_judged_per_row_with_indexes_and_toast() -> None:
    legacy = Storage(rows=100, heap_bytes=12_000, index_bytes=0, toast_bytes=0)  # 120/row
    lean = Storage(rows=100, heap_bytes=6_000, index_bytes=3_000, toast_bytes=1_000)  # 100/row
    assert storage_criterion(legacy, lean).passed  # 20% more efficient
    fat = Storage(rows=100, heap_bytes=6_000, index_bytes=9_000, toast_bytes=0)  # 150/row
    verdict = storage_criterion(legacy, fat)
    assert not verdict.passed and "120 -> 150 bytes per row (20% less efficient)" in verdict.figure
    assert not storage_criterion(legacy, Storage(0, 0, 0, 0)).passed


def test_zero_data_loss_needs_verify_in_sync_and_equal_counts() -> None:
    assert loss_criterion("in_sync", 5, 5).passed
    assert not loss_criterion("in_sync", 5, 4).passed
    assert not loss_criterion("drift", 5, 5).passed
    assert not loss_criterion("unverified", 5, 5).passed


def test_an_index_anywhere_in_the_plan_counts() -> None:
    seq = [{"Plan": {"Node Type": "Limit", "Plans": [{"Node Type": "Seq Scan"}]}}]
    bitmap = [
        {"Plan": {"Node Type": "Bitmap Heap Scan", "Plans": [{"Node Type": "Bitmap Index Scan"}]}}
    ]
    assert not index_used(seq) and index_used(bitmap)
    assert index_used([{"Plan": {"Node Type": "Index Only Scan"}}])


def test_median() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 2.0, 3.0]) == 2.5


def test_every_question_is_asked_of_the_new_table_and_all_but_one_of_the_old() -> None:
    assert all("workflow_runs" in q.new for q in QUERIES)
    assert [q.name for q in QUERIES if q.legacy is None] == ["by user and status"]
    assert all("workflow_processes" in q.legacy for q in QUERIES if q.legacy)


def test_after_a_cutover_no_loss_is_the_archive_agreeing_and_finalized_is_not_measured() -> None:
    from replicator.assess.runner import Assessment

    agreed = migrated_loss_criterion("in_sync", 12)
    assert agreed.passed and "12 written since" in agreed.figure
    assert migrated_loss_criterion("drift", 0).passed is False
    finalized = migrated_loss_criterion("finalized", None)
    assert finalized.passed is None and "not measured" in finalized.figure
    # a criterion not measured neither passes nor fails the assessment
    passing = migrated_loss_criterion("in_sync", 0)
    assert Assessment(criteria=[passing, finalized]).exit_code == 0
    assert Assessment(criteria=[finalized]).exit_code == 1  # nothing measured: not a pass
    assert Assessment(criteria=[migrated_loss_criterion("drift", 0), finalized]).exit_code == 1


def test_legacy_questions_are_asked_of_the_archive_after_a_cutover() -> None:
    for q in QUERIES:
        if q.legacy is not None:
            asked = on_table(q.legacy, "workflow_processes_archive")
            assert 'FROM "workflow_processes_archive"' in asked
            assert "FROM workflow_processes " not in asked + " "
