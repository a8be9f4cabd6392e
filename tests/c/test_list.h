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
    X(completion_sleep_without_spin)                                          \
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
    X(pool_wakes_for_work_left_in_a_busy_deque)                               \
    X(pool_worker_push_spreads_by_stealing)                                   \
    X(pool_drain_takes_unstarted_tasks)                                       \
    X(pool_try_take_claims_queued_work)                                       \
    X(pool_shutdown_runs_queued_work)                                         \
    X(pool_hooks_and_hold_release)                                            \
    X(pool_failed_start_exits_cleanly)                                        \
    X(pool_after_fork_child_resets)                                           \
    X(range_covers_each_index_once)                                           \
    X(range_rejects_bad_arguments)                                            \
    X(range_cancel_stops_claiming)                                            \
    X(range_dispatch_cost)                                                    \
    X(native_pool_is_one_shared_pool)                                         \
    X(shm_create_map_size)                                                    \
    X(shm_from_bytes_across_fork)                                             \
    X(shm_fd_passing_cloexec)                                                 \
    X(shm_fd_passing_limits)                                                  \
    X(shm_recv_times_out)                                                     \
    X(shm_peer_closed_returns_epipe)                                          \
    X(shm_recv_too_many_fds_leaks_none)                                       \
    X(shm_recv_signal_returns_eintr)                                          \
    X(shm_sealed_size_cannot_change)                                          \
    X(slab_owner_and_peer_share_the_data)                                     \
    X(slab_contains_is_exact_at_the_edges)                                    \
    X(slab_map_refuses_what_is_not_a_sealed_slab)                             \
    X(slab_take_fd_hands_the_descriptor_over)                                 \
    X(slab_mapping_outlives_the_table_while_a_view_holds_it)                  \
    X(slab_refill_only_when_idle_across_processes)                            \
    X(slab_refs_and_holds_from_many_threads)                                  \
    X(slab_copy_big_copies_exactly)                                           \
    X(chan_create_rounds_ring_size)                                           \
    X(chan_fifo_varied_sizes)                                                 \
    X(chan_wraps_with_pad_many_times)                                         \
    X(chan_max_record_enforced)                                               \
    X(chan_full_returns_again_then_times_out)                                 \
    X(chan_empty_returns_again_then_times_out)                                \
    X(chan_peek_twice_same_record)                                            \
    X(chan_close_drains_then_epipe)                                           \
    X(chan_close_wakes_parked_consumer_and_producer)                          \
    X(chan_commit_quiet_leaves_the_consumer_parked)                           \
    X(chan_poke_wakes_waiter)                                                 \
    X(chan_peek_detects_scribbled_length)                                     \
    X(chan_map_rejects_non_channel)                                           \
    X(chan_control_shared_across_mappings)                                    \
    X(chan_stress_processes)                                                  \
    X(chan_peer_killed_reaper_closes)                                         \

#endif /* GF_TEST_LIST_H */
