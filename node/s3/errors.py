"""THE S3 error table: every failure a client can see is one class here.

    S3Error                      (code, HTTP status, default message)
    ├── 400 InvalidArgument, InvalidRequest, InvalidBucketName, KeyTooLongError,
    │       MalformedXML, IncompleteBody, InvalidDigest, BadDigest,
    │       XAmzContentSHA256Mismatch, AuthorizationHeaderMalformed,
    │       AuthorizationQueryParametersError, EntityTooLarge, EntityTooSmall,
    │       InvalidPart, InvalidPartOrder, MetadataTooLarge, TooManyBuckets, RequestTimeout,
    │       MissingContentLength (411), InvalidEncryptionAlgorithmError, InvalidStorageClass,
    │       MalformedPolicy, BadRequest
    ├── 403 AccessDenied, AccessForbidden, InvalidAccessKeyId, SignatureDoesNotMatch,
    │       RequestTimeTooSkewed, ExpiredToken
    ├── 404 NoSuchBucket, NoSuchKey, NoSuchUpload, NoSuchBucketPolicy,
    │       NoSuchCORSConfiguration
    ├── 405 MethodNotAllowed
    ├── 409 BucketAlreadyOwnedByYou, BucketAlreadyExists, BucketNotEmpty, OperationAborted,
    │       ConditionalRequestConflict
    ├── 412 PreconditionFailed
    ├── 416 InvalidRange, InvalidPartNumber
    ├── 500 InternalError
    ├── 501 NotImplemented
    └── 503 ServiceUnavailable, SlowDown

Lower layers raise their own typed errors (cluster.errors, cluster.drive); `from_internal`
is the one place that maps them onto this table, so HTTP never leaks downwards.
"""

from __future__ import annotations

from typing import ClassVar


class S3Error(Exception):
    code: ClassVar[str] = "InternalError"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "We encountered an internal error. Please try again."

    def __init__(self, message: str | None = None, **extra: str) -> None:
        self.message = message or self.default_message
        #: extra XML elements (e.g. BucketName, Key) added to the error body
        self.extra = extra
        #: extra response headers (e.g. Retry-After on SlowDown)
        self.headers: dict[str, str] = {}
        super().__init__(f"{self.code}: {self.message}")


def _err(code: str, status: int, message: str) -> type[S3Error]:
    return type(code, (S3Error,), {"code": code, "status": status, "default_message": message})


InvalidArgument = _err("InvalidArgument", 400, "Invalid Argument")
#: a CORS preflight without Origin or a valid Access-Control-Request-Method
BadRequest = _err("BadRequest", 400, "Insufficient information. Origin request header needed.")
InvalidRequest = _err("InvalidRequest", 400, "Invalid Request")
InvalidBucketName = _err("InvalidBucketName", 400, "The specified bucket is not valid.")
KeyTooLongError = _err("KeyTooLongError", 400, "Your key is too long.")
MalformedXML = _err(
    "MalformedXML",
    400,
    "The XML you provided was not well-formed or did not validate against our published schema.",
)
IncompleteBody = _err(
    "IncompleteBody",
    400,
    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
)
InvalidDigest = _err("InvalidDigest", 400, "The Content-MD5 you specified is not valid.")
BadDigest = _err(
    "BadDigest", 400, "The Content-MD5 or checksum you specified did not match what we received."
)
XAmzContentSHA256Mismatch = _err(
    "XAmzContentSHA256Mismatch",
    400,
    "The provided 'x-amz-content-sha256' header does not match what was computed.",
)
AuthorizationHeaderMalformed = _err(
    "AuthorizationHeaderMalformed", 400, "The authorization header is malformed."
)
AuthorizationQueryParametersError = _err(
    "AuthorizationQueryParametersError",
    400,
    "Query-string authentication parameters are malformed.",
)
EntityTooLarge = _err(
    "EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed object size."
)
EntityTooSmall = _err(
    "EntityTooSmall", 400, "Your proposed upload is smaller than the minimum allowed object size."
)
InvalidPart = _err("InvalidPart", 400, "One or more of the specified parts could not be found.")
InvalidPartOrder = _err("InvalidPartOrder", 400, "The list of parts was not in ascending order.")
MetadataTooLarge = _err(
    "MetadataTooLarge", 400, "Your metadata headers exceed the maximum allowed metadata size."
)
TooManyBuckets = _err(
    "TooManyBuckets", 400, "You have attempted to create more buckets than allowed."
)
MalformedPolicy = _err(
    "MalformedPolicy", 400, "Policies must be valid JSON and the first byte must be '{'"
)
InvalidStorageClass = _err(
    "InvalidStorageClass", 400, "The storage class you specified is not valid"
)
InvalidEncryptionAlgorithmError = _err(
    "InvalidEncryptionAlgorithmError", 400, "The encryption request you specified is not valid."
)
RequestTimeout = _err(
    "RequestTimeout",
    400,
    "Your socket connection to the server was not read from or written to within the timeout period.",
)
MissingContentLength = _err(
    "MissingContentLength", 411, "You must provide the Content-Length HTTP header."
)
AccessDenied = _err("AccessDenied", 403, "Access Denied")
#: a CORS preflight no rule allows (S3's own code for it, not AccessDenied)
AccessForbidden = _err(
    "AccessForbidden",
    403,
    "CORSResponse: This CORS request is not allowed. This is usually "
    "because the evalution of Origin, request method / Access-Control-Request-Method or "
    "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
)
InvalidAccessKeyId = _err(
    "InvalidAccessKeyId", 403, "The AWS Access Key Id you provided does not exist in our records."
)
SignatureDoesNotMatch = _err(
    "SignatureDoesNotMatch",
    403,
    "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
)
RequestTimeTooSkewed = _err(
    "RequestTimeTooSkewed",
    403,
    "The difference between the request time and the server's time is too large.",
)
ExpiredToken = _err("ExpiredToken", 403, "Request has expired")
NoSuchBucket = _err("NoSuchBucket", 404, "The specified bucket does not exist")
NoSuchKey = _err("NoSuchKey", 404, "The specified key does not exist.")
NoSuchUpload = _err("NoSuchUpload", 404, "The specified multipart upload does not exist.")
NoSuchBucketPolicy = _err("NoSuchBucketPolicy", 404, "The bucket policy does not exist")
NoSuchCORSConfiguration = _err(
    "NoSuchCORSConfiguration", 404, "The CORS configuration does not exist"
)
MethodNotAllowed = _err(
    "MethodNotAllowed", 405, "The specified method is not allowed against this resource."
)
BucketAlreadyOwnedByYou = _err(
    "BucketAlreadyOwnedByYou",
    409,
    "Your previous request to create the named bucket succeeded and you already own it.",
)
BucketAlreadyExists = _err(
    "BucketAlreadyExists",
    409,
    "The requested bucket name is not available. The bucket namespace is shared by all users"
    " of the system. Please select a different name and try again.",
)
BucketNotEmpty = _err("BucketNotEmpty", 409, "The bucket you tried to delete is not empty")
OperationAborted = _err(
    "OperationAborted",
    409,
    "A conflicting conditional operation is currently in progress against this resource.",
)
ConditionalRequestConflict = _err(
    "ConditionalRequestConflict",
    409,
    "The conditional request cannot succeed due to a conflicting operation against this resource.",
)
PreconditionFailed = _err(
    "PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold"
)
InvalidRange = _err("InvalidRange", 416, "The requested range is not satisfiable")
InvalidPartNumber = _err("InvalidPartNumber", 416, "The requested partnumber is not satisfiable")
InternalError = _err("InternalError", 500, S3Error.default_message)
NotImplementedError_ = _err(
    "NotImplemented", 501, "A header you provided implies functionality that is not implemented"
)
ServiceUnavailable = _err(
    "ServiceUnavailable",
    503,
    "Reduce your request rate or try again: not enough drives are online.",
)
SlowDown = _err("SlowDown", 503, "Please reduce your request rate.")


def from_internal(exc: BaseException) -> S3Error:
    """Maps an error of a lower layer onto the table; anything unknown is InternalError."""
    from shardfleet.cluster import errors as objerr
    from shardfleet.cluster.put import DigestMismatch

    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, objerr.NoSuchBucket):
        return NoSuchBucket()
    if isinstance(exc, objerr.NoSuchKey):
        return NoSuchKey()
    if isinstance(exc, objerr.NoSuchUpload):
        return NoSuchUpload()
    if isinstance(exc, objerr.BucketExists):
        return BucketAlreadyOwnedByYou()
    if isinstance(exc, objerr.BucketNotEmpty):
        return BucketNotEmpty()
    if isinstance(exc, objerr.QuorumLost):
        return ServiceUnavailable(
            f"Not enough drives available: need {exc.need} of {exc.total}, {exc.got} answered."
        )
    if isinstance(exc, objerr.ClusterPartitioned):
        return ServiceUnavailable(
            "This node cannot see a majority of the cluster and refuses writes; try another node."
        )
    if isinstance(exc, DigestMismatch):
        return BadDigest()
    if isinstance(exc, objerr.LockConflict):
        return ConditionalRequestConflict()
    return InternalError()
