# Authentication and authorisation (docs/security.md): the password file
# (passwords.py, PBKDF2-SHA256 in pbkdf2.py), the ACL file (acl.py) and the
# broker's guard that applies them (guard.py). Sans-IO: the runtime reads
# the files (edge/runtime/auth.py) and hands their text in. Imported only
# when [auth] asks for something: a board without it pays no heap.
