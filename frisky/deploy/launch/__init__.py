"""``frisky-launch``: a cluster over SSH.

:mod:`.hosts` parses host lists, :mod:`.session` is the only module that knows ssh (one
session a host, the agent's stdin and stdout), :mod:`.remote` is the agent each session
runs on its host, :mod:`.launcher` starts and tears down the whole cluster, and
:mod:`.connection` reads and writes the connection file clients use.
"""
