import time

from moeplane.store.ids import new_id


def test_ids_are_prefixed_unique_and_time_ordered():
    first = [new_id("ten") for _ in range(1000)]
    time.sleep(0.002)
    later = new_id("ten")
    assert len(set(first)) == 1000
    assert all(i.startswith("ten-") and len(i) == 30 for i in first)
    assert all(later > i for i in first)
