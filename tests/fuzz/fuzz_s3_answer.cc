// Fuzzes the S3 client's parsers of what an object store answers (ListObjectsV2 pages and error
// bodies), as the staging and the recovery tool will meet them from a gateway that may be hostile:
// no crash, no read out of bounds, and every listing that parses keeps the client's bounds.
#include "blockrep/objstore/s3_client.h"
#include "fuzz_util.h"

using namespace blockrep;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto seed = [](const char* name, const std::string& xml) {
    fuzz::WriteSeed(name, Bytes(xml.begin(), xml.end()));
  };
  seed("list",
       "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
       "<Name>b</Name><Prefix>p/</Prefix><IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken>"
       "<Contents><Key>p/a&amp;b</Key><Size>12</Size></Contents><Contents><Key>p/c</Key><Size>0</Size></Contents>"
       "</ListBucketResult>");
  seed("error", "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>gone</Message></Error>");
  seed("dtd", "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]>"
              "<ListBucketResult><Contents><Key>&b;</Key><Size>1</Size></Contents></ListBucketResult>");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteSpan in(data, size);
  Result<s3_internal::ListPage> page = s3_internal::ParseListPage(in);
  if (page.ok()) {
    FUZZ_CHECK(page->objects.size() <= kS3ListPageKeysMax);
    for (const S3Object& o : page->objects) FUZZ_CHECK(!o.key.empty() && o.key.size() <= kS3KeyBytesMax);
    FUZZ_CHECK(!page->truncated || !page->next_token.empty());
  }
  s3_internal::ErrorBody e = s3_internal::ParseErrorBody(in);
  FUZZ_CHECK(e.code.size() <= 200 && e.message.size() <= 200);
  return 0;
}
