/*
 * musl-hello: a dynamically linked musl program (built with `musl-gcc -O1`), whose
 * PT_INTERP is /lib/ld-musl-x86_64.so.1, for tests/tests/programs.rs.
 */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    char *p = malloc(64);
    if (p == NULL)
        return 1;
    snprintf(p, 64, "hello from musl, %d args", argc);
    puts(p);
    free(p);
    (void)argv;
    return 0;
}
