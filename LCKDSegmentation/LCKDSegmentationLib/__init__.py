"""Slicer glue for the LCKD Segmentation module: selection checks, worker client, MRML I/O, logic.

No PyTorch here: the network runs in the background worker (`lckd.frontends.worker`), which the
logic reaches through `workerclient`.
"""
