/* xvmq-guest-channels: a guest's `ethtool -l/-L IF combined N`, which
 * busybox lacks. Linked statically into the test guests' initramfs
 * (tests/lib/qemu_guest.h), where there is no libc to load.
 *
 *   xvmq-guest-channels IF        prints "combined N max M"
 *   xvmq-guest-channels IF N      sets the combined channels to N (ETHTOOL_SCHANNELS)
 */
#include <errno.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int channels(int fd, const char* dev, struct ethtool_channels* ch, unsigned cmd) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  strncpy(ifr.ifr_name, dev, IFNAMSIZ - 1);
  ch->cmd = cmd;
  ifr.ifr_data = (void*)ch;
  return ioctl(fd, SIOCETHTOOL, &ifr);
}

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s IF [COMBINED]\n", argv[0]);
    return 2;
  }
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) {
    perror("socket");
    return 1;
  }
  struct ethtool_channels ch;
  memset(&ch, 0, sizeof(ch));
  if (channels(fd, argv[1], &ch, ETHTOOL_GCHANNELS) != 0) {
    fprintf(stderr, "ETHTOOL_GCHANNELS %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  if (argc == 3) {
    ch.combined_count = (unsigned)strtoul(argv[2], NULL, 10);
    if (channels(fd, argv[1], &ch, ETHTOOL_SCHANNELS) != 0) {
      fprintf(stderr, "ETHTOOL_SCHANNELS %s combined %u: %s\n", argv[1], ch.combined_count, strerror(errno));
      return 1;
    }
    memset(&ch, 0, sizeof(ch));
    if (channels(fd, argv[1], &ch, ETHTOOL_GCHANNELS) != 0) return 1;
  }
  printf("combined %u max %u\n", ch.combined_count, ch.max_combined);
  close(fd);
  return 0;
}
