"""The ``headrig serve`` backend: a ZeroMQ job server, its durable job store and its worker processes.

``jobstore`` keeps every job on disk (inputs, state, finished results) so that a restart never loses
a finished result; ``workers`` runs jobs in separate processes so that nothing a job does can stall
or crash the socket loop.
"""
