/* test_list.h - every C test, declared once.
 *
 * X(name) for each test; the function is test_<name>, defined with
 * TEST(name) in one of the tests/c/test_*.c files.  Names are
 * <area>_<behaviour>.  Add one line per test; keep areas together. */
#ifndef GF_TEST_LIST_H
#define GF_TEST_LIST_H

#define TEST_LIST(X)                                                          \
    X(error_names)                                                            \
    X(error_messages)                                                         \
    X(park_futex_times_out)                                                   \
    X(park_futex_value_changed_returns_at_once)                               \
    X(park_futex_wakes_sleeper)                                               \
    X(park_futex_signal_returns_eintr)                                        \
    X(park_event_prepare_cancel)                                              \
    X(park_event_wait_times_out)                                              \
    X(park_no_lost_wakeup)                                                    \
    X(completion_done_returns_at_once)                                        \
    X(completion_wait_times_out)                                              \
    X(completion_many_waiters_wake)                                           \
    X(completion_publishes_data)                                              \
    X(completion_across_processes)                                            \
    X(completion_stress_eight_waiters)                                        \
    X(mpmc_size_rejects_bad_capacity)                                         \
    X(mpmc_fifo_single_thread)                                                \
    X(mpmc_full_returns_again)                                                \
    X(mpmc_empty_returns_again)                                               \
    X(mpmc_close_drains_then_shuts_down)                                      \
    X(mpmc_close_wakes_blocked)                                               \
    X(mpmc_validate_detects_corruption)                                       \
    X(mpmc_works_at_another_address)                                          \
    X(mpmc_two_mappings_share_one_ring)                                       \
    X(mpmc_stress_threads)                                                    \
    X(mpmc_stress_processes)                                                  \
    X(deque_empty_returns_null)                                               \
    X(deque_push_pop_lifo)                                                    \
    X(deque_steal_fifo)                                                       \
    X(deque_grows)                                                            \
    X(deque_steal_races_pop)                                                  \
    X(deque_last_item_races)                                                  \
    X(pool_create_rejects_zero_workers)                                       \
    X(pool_runs_every_task_once)                                              \
    X(pool_starts_workers_lazily)                                             \
    X(pool_no_lost_wakeup)                                                    \
    X(pool_worker_push_spreads_by_stealing)                                   \
    X(pool_drain_takes_unstarted_tasks)                                       \
    X(pool_shutdown_runs_queued_work)                                         \
    X(pool_hooks_and_hold_release)                                            \
    X(pool_failed_start_exits_cleanly)                                        \
    X(pool_after_fork_child_resets)                                           \
    X(range_covers_each_index_once)                                           \
    X(range_rejects_bad_arguments)                                            \
    X(range_cancel_stops_claiming)                                            \
    X(range_dispatch_cost)                                                    \
    X(native_pool_is_one_shared_pool)                                         \

#endif /* GF_TEST_LIST_H */
