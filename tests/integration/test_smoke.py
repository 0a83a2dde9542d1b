from wf_basic import add_flow


async def test_in_process_run(engine):
    h = await engine.start(add_flow, 1)
    assert await h.result(timeout=10) == 3
    assert await h.status() == "completed"
