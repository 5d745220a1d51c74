package snapshot

import "syscall"

// mmapFlags maps the whole file up front, as etcd's backend does on Linux:
// the bbolt check visits every page, and one populating mmap costs less than
// a fault per page.
const mmapFlags = syscall.MAP_POPULATE
