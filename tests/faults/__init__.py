"""The fault suite (issue 18 item 6): kills, full disks, clock jumps, reload storms, floods.

Every test is marked ``slow`` and named for the behaviour it proves. They run in the normal
suite (``-m 'not slow'`` leaves them out) and are bounded in counts and time.
"""
