/* Stand-in for the nonewprivs test image's helper. Installed setuid root in
 * the image: with no_new_privs unset it runs with euid 0 whatever the
 * container's uid, with no_new_privs set the kernel ignores the setuid bit.
 * The suite matches this exact line in the container log. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("Effective uid: %d\n", (int)geteuid());
    return 0;
}
