"""The history (issue 22): every event and every window's embedding kept in a database, to review past
events, search the past by a sentence and backtest a description before saving it (docs/history.md).

    store.py      open (check, migrate in place), ids, one transaction per batch   schema.py + migrations/
    writer.py     the runtime's writer: a bounded queue, its own thread, retries; a sink and a frame tap
    retention.py  age and size limits for windows, thumbnails and events
    search.py     a sentence over the stored windows (sign-bit pass in memory, exact re-rank)
    backtest.py   an action set replayed over stored windows by the live Recognizer, Scorer and Decisions
    footage.py    recorded footage into the same store (`cezsar index`)
    service.py    what the HTTP routes and the verbs call (reads, search, backtest)
"""
