import gilfree
import gilfree._processes
import tasks

with gilfree.ProcessPoolExecutor(1) as ex:
    assert ex.submit(tasks.square, 7).result(timeout=60) == 49
    print("by value", gilfree._processes.by_value)
