"""The web console: a Starlette app over an engine (``create_app``, in :mod:`durable.ui.app`),
its live updates (:class:`durable.ui.live.LiveHub`), served by ``durable ui`` or
``durable-dispatcher --ui`` (:mod:`durable.ui.serve`). Needs ``pip install 'durable[ui]'``;
:mod:`durable.ui.bind` (where it may listen) needs nothing beyond durable."""
