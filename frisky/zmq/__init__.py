"""Frisky's ZeroMQ plumbing: contexts, addresses, sockets and wake-ups.

Named like pyzmq on purpose of its role; always import it absolutely
(``from frisky.zmq import sockets``) — plain ``import zmq`` is pyzmq.
"""
