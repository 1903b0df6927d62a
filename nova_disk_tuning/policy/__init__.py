"""The tuning policy: facts about disks and the host in, settings with reasons out.

``facts`` (what was measured), ``policy`` (the one place that decides cache,
io, discard and detect_zeroes), ``iothreads`` (the IOThread plan),
``safety`` (the rules QEMU and the data enforce, shared by the policy, the
guest builder's guard and ``audit``) and ``rules`` (the decision table
rendered from the policy for the documentation). Nothing here imports an
image backend, a volume driver or the compute driver.
"""
