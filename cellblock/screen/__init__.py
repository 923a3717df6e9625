"""The screen: RxRx1's plates, wells and sites, and the tables that describe them.

``plates`` (plate geometry, well names, ``id_code``, plate keys, the raw tree's file
names), ``metadata`` (RxRx1's tables merged into one site table; plate groups) and
``sites`` (choosing a split, experiments or plates; wells from sites). Every stage reads
these; they read nothing of cellblock but its errors. Nothing is imported here.
"""
