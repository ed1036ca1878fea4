/*
 * Prints the guest's memory figures from sysinfo(2), for the dynamic-program tests
 * (tests/tests/dynamic.rs): `meminfo: shared=S cache=C free=F` in KiB, where crx-guest
 * reports as shared the page-cache frames more than one mapping shows and as buffers every
 * page-cache frame. Built both static and dynamically linked.
 */
#include <stdio.h>
#include <sys/sysinfo.h>

int main(void)
{
    struct sysinfo s;
    if (sysinfo(&s) != 0) {
        perror("meminfo: sysinfo");
        return 1;
    }
    unsigned long unit = s.mem_unit ? s.mem_unit : 1;
    printf("meminfo: shared=%lu cache=%lu free=%lu\n", s.sharedram * unit / 1024, s.bufferram * unit / 1024,
           s.freeram * unit / 1024);
    return 0;
}
