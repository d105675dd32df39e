"""The one set of test helpers. Test modules and conftest.py files import from here, never from
each other (enforced by tests/unit/test_test_layout.py).

- :mod:`tests.support.env`       ``REPO``, ``in_ci()``, ``skip_or_fail()``, ``require_tool()``,
                                 ``require_drift_env()`` (missing prerequisites: fail in CI, skip elsewhere)
- :mod:`tests.support.settings`  ``make_settings()``, ``redis_settings()``
- :mod:`tests.support.sites`     data dirs: ``build_small_store()``, ``build_feature_data()``,
                                 ``clone_data_dir()``, ``copy_site()``, ``build_store_env()``,
                                 ``build_served_site()``, ``clone_version()``, ``set_pointer()``,
                                 ``snapshot()``, ``tmp_leftovers()``,
                                 ``synthetic_scores()`` (a day's scores without a model)
- :mod:`tests.support.metrics`   ``metrics_of()``, ``metric()`` (Prometheus text scraping)
- :mod:`tests.support.servers`   ``free_port()``, ``port_open()``, ``create()``, ``live_server()``,
                                 ``RedisProcess``, ``reachable_redis()``, ``http_receiver()``
                                 (integration tests only)
- :mod:`tests.support.objectstore` ``s3_server()``/``S3Server`` (moto's S3 API server), ``s3_settings()``
                                 (integration tests only)
- :mod:`tests.support.tools`     subprocess runners: ``run()``, ``run_cli()``/``cli_env()``/``CHURN``,
                                 Helm: ``helm_template()``, ``render_cases()``, ``Rendered``, ``CASES``...
                                 (integration and deploy tests only)
- :mod:`tests.support.contracts` what docs/contracts.md lists (commands, routes, metrics)

Unit tests (tests/unit) may use env, settings, sites and metrics; servers and tools start processes.
"""
